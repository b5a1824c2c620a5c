// Runs NBD_DO_IT on its own thread: the ioctl blocks until the device disconnects,
// which would starve libuv's pool (or freeze the event loop) anywhere else.
import { parentPort, workerData } from 'node:worker_threads';
import { errno, libc } from '@nbd/node/internal';

const NBD_DO_IT = 0xab03;
const { fd } = workerData as { fd: number };
const ret = libc().ioctl(fd, NBD_DO_IT, 'unsigned long', 0n);
parentPort?.postMessage({ ret, errno: ret < 0 ? errno() : 0 });
