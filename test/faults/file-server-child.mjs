// Our server over a FileDevice, in a process of its own so it can be SIGKILLed (run
// under strace by sigkill-durability.test.ts). argv: socket path, image path, and
// "emulated-fua" to hide the device's native FUA (the server then syncs after the write).
// Prints "ready PID" once listening.

import { FileDevice } from '../../packages/devices/dist/index.js';
import { listen } from '../../packages/server/dist/index.js';

const [path, image, mode] = process.argv.slice(2);
const file = await FileDevice.open(image);
const device =
  mode === 'emulated-fua'
    ? new Proxy(file, { get: (t, k) => (k === 'fua' ? false : typeof t[k] === 'function' ? t[k].bind(t) : t[k]) })
    : file;
await listen({ path }, [{ name: 'disk', size: device.size, device }]);
console.log(`ready ${process.pid}`);
