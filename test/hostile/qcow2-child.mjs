// Opens one (hostile) qcow2 image with @nbd/devices in a process of its own, so that
// memory and time are the image's alone: reads the first 8 MiB in 1 MiB pieces (and
// with "write", writes 4 KiB at WRITE_AT first, then flushes), and prints one JSON
// line: the error at open, the first read and write errors, a digest of what was
// read, and the peak RSS. argv: image, mode (read | write | follow), WRITE_AT.
import { createHash } from 'node:crypto';
import { openQcow2 } from '../../packages/devices/dist/index.js';

const [image, mode, writeAt] = process.argv.slice(2);
const result = { open: null, read: null, write: null, digest: null, maxRssMiB: 0 };
const describe = (e) => `${e?.name}: ${e?.message}`;
const opts = { fua: false, signal: new AbortController().signal };
let dev;
try {
  dev = await openQcow2(image, { readOnly: mode !== 'write', backing: mode === 'follow' ? 'follow' : 'none' });
} catch (e) {
  result.open = describe(e);
}
if (dev) {
  if (mode === 'write') {
    try {
      await dev.writeAt(new Uint8Array(4096).fill(0xee), Number(writeAt), opts);
      await dev.sync(opts);
    } catch (e) {
      result.write = describe(e);
    }
  }
  const hash = createHash('sha256');
  const end = Math.min(dev.size, 8 * 1024 * 1024);
  for (let at = 0; at < end; at += 1024 * 1024) {
    const buf = new Uint8Array(Math.min(1024 * 1024, end - at));
    try {
      await dev.readAt(buf, at, opts);
    } catch (e) {
      result.read ??= describe(e);
    }
    hash.update(buf);
  }
  result.digest = hash.digest('hex');
  await dev.close().catch((e) => {
    result.write ??= `close: ${describe(e)}`;
  });
}
result.maxRssMiB = Math.round(process.resourceUsage().maxRSS / 1024);
console.log(JSON.stringify(result));
