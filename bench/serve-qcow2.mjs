// A qcow2 image served by @nbd/devices' QcowDevice on a unix socket, for bench/qcow2.sh.
//   node bench/serve-qcow2.mjs SOCKET IMAGE
// Needs a build (pnpm exec tsc -b). SIGTERM stops it (the image is flushed and closed).

import { openQcow2 } from '../packages/devices/dist/index.js';
import { listenAndServe } from '../packages/server/dist/index.js';

const [socket, image] = process.argv.slice(2);
const device = await openQcow2(image);
const ac = new AbortController();
process.once('SIGTERM', () => ac.abort());
process.once('SIGINT', () => ac.abort());
await listenAndServe({ path: socket }, [{ name: '', size: device.size, device }], { signal: ac.signal });
await device.close();
