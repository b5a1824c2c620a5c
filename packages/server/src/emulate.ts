// What the transmission engine does for a device without `zero` or `cache`: plain
// writes of zeroes, and reads whose data is dropped (warming the device's cache).
import type { Device, IoOptions } from './device.js';

/** Work buffer size of both. */
const SCRATCH = 1024 * 1024;
let zeroes: Uint8Array | undefined;

/** NBD_CMD_WRITE_ZEROES as writes of a shared zero-filled buffer. */
export async function writeZeroes(dev: Device, offset: number, length: number, opts: IoOptions): Promise<void> {
  zeroes ??= new Uint8Array(SCRATCH);
  for (let done = 0; done < length; ) {
    const n = Math.min(SCRATCH, length - done);
    await dev.writeAt!(zeroes.subarray(0, n), offset + done, opts);
    done += n;
  }
}

/** NBD_CMD_CACHE as reads into a scratch buffer. */
export async function readAndDrop(dev: Device, offset: number, length: number, opts: IoOptions): Promise<void> {
  const buf = new Uint8Array(Math.min(SCRATCH, length));
  for (let done = 0; done < length; ) {
    const n = Math.min(buf.length, length - done);
    await dev.readAt(buf.subarray(0, n), offset + done, opts);
    done += n;
  }
}
