// A tiny nbdinfo: `node examples/dist/nbd-info.js [--list] [--map[=CONTEXT]] URI`
import { AllocationState, TransmissionFlag, flagNames } from '@nbd/protocol';
import { Client } from '@nbd/client';

async function main(argv: string[]): Promise<void> {
  const uri = argv.find((a) => !a.startsWith('--'));
  if (!uri) throw new Error('usage: nbd-info [--list] [--map[=CONTEXT]] NBD-URI');
  const mapArg = argv.find((a) => a.startsWith('--map'));
  const client = await Client.connect(uri, { handshakeTimeout: 10_000 });
  if (argv.includes('--list')) {
    for (const e of await client.list()) console.log(`export="${e.name}"${e.description ? ` description="${e.description}"` : ''}`);
    await client.abort();
    return;
  }
  if (mapArg) {
    const context = mapArg.includes('=') ? mapArg.slice(mapArg.indexOf('=') + 1) : 'base:allocation';
    const conn = await client.go(undefined, { metaContexts: [context] });
    let off = 0;
    while (off < conn.info.size) {
      const ext = (await conn.blockStatus(off, conn.info.size - off)).get(context) ?? [];
      if (ext.length === 0) throw new Error(`the server has no ${context} map`);
      for (const e of ext) {
        const len = Math.min(e.length, conn.info.size - e.offset);
        const words = context === 'base:allocation' ? flagNames(AllocationState, e.flags).join(',').toLowerCase() || 'data' : '';
        console.log(`${String(e.offset).padStart(12)} ${String(len).padStart(12)} ${String(e.flags).padStart(4)}  ${words}`);
        off = e.offset + e.length;
      }
    }
    await conn.disconnect();
    return;
  }
  const info = client.style === 'fixed-newstyle' ? await client.info() : undefined;
  const conn = await client.go();
  const i = info ?? conn.info;
  console.log(`protocol: ${client.style}${conn.extendedHeaders ? ' (extended headers)' : conn.structuredReplies ? ' (structured replies)' : ''}`);
  console.log(`export="${i.name}":`);
  if (i.description) console.log(`\tdescription: ${i.description}`);
  console.log(`\texport-size: ${conn.info.size}`);
  console.log(`\tflags: ${flagNames(TransmissionFlag, conn.info.flags).join(' ').toLowerCase()}`);
  if (i.blockSizes) console.log(`\tblock sizes: min ${i.blockSizes.min}, preferred ${i.blockSizes.preferred}, max ${i.blockSizes.max}`);
  for (const [k, v] of Object.entries(conn.info.can)) console.log(`\tcan_${k}: ${v}`);
  console.log(`\tis_read_only: ${conn.info.is.readOnly}`);
  await conn.disconnect();
}

main(process.argv.slice(2)).catch((e: unknown) => {
  console.error(`nbd-info: ${(e as Error).message}`);
  process.exit(1);
});
