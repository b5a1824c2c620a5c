// What the transmission engine does for a device without `cache`: reads whose data is
// dropped (warming the device's cache). (Without `zero`: @nbd/protocol's writeZeroes.)
import type { Device, IoOptions } from './device.js';

/** Work buffer size. */
const SCRATCH = 1024 * 1024;

/** NBD_CMD_CACHE as reads into a scratch buffer. */
export async function readAndDrop(dev: Device, offset: number, length: number, opts: IoOptions): Promise<void> {
  const buf = new Uint8Array(Math.min(SCRATCH, length));
  for (let done = 0; done < length; ) {
    const n = Math.min(buf.length, length - done);
    await dev.readAt(buf.subarray(0, n), offset + done, opts);
    done += n;
  }
}
