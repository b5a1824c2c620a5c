// A FileDevice of @nbd/devices served on a unix socket, for bench/devices.sh.
//   node bench/serve-devices.mjs SOCKET FILE [plain|three] [--direct]
// "three": stats(blocksize(offset(file, 0), minBlock 512)) — three filters, none of
// which changes the data, to measure what layers cost.
// Needs a build (pnpm exec tsc -b). SIGTERM stops it.

import { blocksize, FileDevice, offset, stack, stats } from '../packages/devices/dist/index.js';
import { listenAndServe } from '../packages/server/dist/index.js';

const [socket, file, kind = 'plain', ...flags] = process.argv.slice(2);
const base = await FileDevice.open(file, { direct: flags.includes('--direct') });
const device =
  kind === 'three'
    ? await stack(
        base,
        (d) => offset(d, { offset: 0 }),
        (d) => blocksize(d, { minBlock: 512 }),
        stats,
      )
    : base;
const ac = new AbortController();
process.once('SIGTERM', () => ac.abort());
process.once('SIGINT', () => ac.abort());
await listenAndServe({ path: socket }, [{ name: '', size: device.size, device }], { signal: ac.signal });
await device.close?.();
