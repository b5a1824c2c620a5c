// 4 KiB random reads at a fixed queue depth on one connection:
// `node examples/dist/client-randread.js URI [SECONDS=10] [DEPTH=32] [BS=4096]`; prints IOPS.
import { open } from '@nbd/client';

async function main(argv: string[]): Promise<void> {
  const [uri, secs = '10', depthArg = '32', bsArg = '4096'] = argv;
  if (!uri) throw new Error('usage: client-randread URI [SECONDS] [DEPTH] [BS]');
  const conn = await open(uri);
  const bs = Number(bsArg);
  const blocks = Math.floor(conn.info.size / bs);
  const deadline = performance.now() + Number(secs) * 1000;
  let ops = 0;
  const buf = Array.from({ length: Number(depthArg) }, () => new Uint8Array(bs));
  const t0 = performance.now();
  await Promise.all(
    buf.map(async (b) => {
      while (performance.now() < deadline) {
        await conn.readInto(b, Math.floor(Math.random() * blocks) * bs);
        ops++;
      }
    }),
  );
  const s = (performance.now() - t0) / 1000;
  console.log(`${Math.round(ops / s)}`);
  await conn.disconnect();
}

main(process.argv.slice(2)).catch((e: unknown) => {
  console.error(`client-randread: ${(e as Error).message}`);
  process.exit(1);
});
