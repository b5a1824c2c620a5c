// `nbd serve data`: the same bytes and map as nbdkit's data plugin for strings within
// the size (groups, repeats, slices, offsets, overlaps), and hostile strings bounded by
// the size given (issue 19: '(1 @+4095)*100000000' size=1M passed 1 GiB of RSS in 1.4 s).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { run, runOk } from '../support/peers.js';
import { scoped } from '../support/scoped.js';
import { NBD_SHELL, nbd } from './support.js';

const s = scoped('nbd-cli-serve-data-');

/** What a server serves, read by libnbd through `--run`: the bytes (nbdcopy) and the map (nbdinfo --map). */
async function served(server: string, args: string[]): Promise<{ bytes: Buffer; map: string }> {
  const dir = s.tmp();
  const out = join(dir, 'disk');
  await runOk('sh', [
    '-c',
    `${server} -U - ${args.map((a) => `'${a}'`).join(' ')} --run 'nbdcopy "$uri" ${out} && nbdinfo --map "$uri" > ${out}.map'`,
  ]);
  return { bytes: readFileSync(out), map: readFileSync(`${out}.map`, 'utf8') };
}

describe('nbd serve data', () => {
  test.each([
    { text: '1*8 @0 (@4 2)*2', size: '' },
    { text: '1*8 @0 ((@2)*2)[1:3] @4 (2 @-1 3)', size: '' },
    { text: '(1 @+4095)*300', size: '' },
    { text: '((1 2 @+6)*3 @^64 "ab")*50 @-10 0*4', size: '' },
    { text: '(0x41 0x42 0x43)[1:3]*1000 @0 (1 @+2)*10', size: '' },
    { text: '(1 @+1)*70000', size: '' },
    { text: '((1 @+3)*300 @-1 9)*40', size: '' },
    { text: '(1*5000 @^4096)*10 @100 0*10000', size: '' },
    { text: '2*200000 @0 ((@3 7)*5 @+1)*30000', size: '' },
    { text: '5*100000 @50000 (@40000 1)*2 @1000 ((9 @+100000)[0:3])*3', size: '' },
    { text: '(le32:0xdeadbeef @+4092)*1000', size: 'size=2M' },
    { text: '("hello" @^16)*100000', size: 'size=1M' },
    { text: '(1 @+4095)*300', size: 'size=100000' },
    { text: '7*300000 @100 (@200000)', size: 'size=250000' },
  ])('data $text $size: the bytes and map nbdkit serves', async ({ text, size }) => {
    const words = ['data', text, ...(size ? [size] : [])];
    const [theirs, ours] = await Promise.all([served('nbdkit', words), served(`${NBD_SHELL} serve`, words)]);
    expect(ours.bytes.length).toBe(theirs.bytes.length);
    expect(Buffer.compare(ours.bytes, theirs.bytes)).toBe(0);
    expect(ours.map).toBe(theirs.map);
  });

  // Each row: the string, the size given, what the server does (and the string in full, when the first is a summary).
  // Memory is the server's peak RSS (VmHWM).
  test.each([
    ['(1 @+4095)*100000000', 'size=1M', 'serves 1 MiB'],
    ['((1 @+1)*1000 2)*1000000000', 'size=1M', 'serves 1 MiB'],
    ['0x55*9007199254740991', 'size=1M', 'serves 1 MiB'],
    ['@9007199254740000 1', 'size=1M', 'serves 1 MiB'],
    ['(@1048576)*1000000000 1', 'size=1M', 'serves 1 MiB'],
    ['(1 @0 …20 000 items…)*1000000000', 'size=1M', 'serves 1 MiB', `(${'1 @0 '.repeat(20_000)})*1000000000`],
    ['1*4294967296', '(no size)', 'refuses: more than 4 Gi steps'],
    ['((1 @+4095)*100000000)*100000000', 'size=1M', 'refuses: beyond 2^53 - 1 bytes'],
  ])('hostile: %s %s → %s, within 10 s and 256 MiB of RSS', async (label, size, what, text = label) => {
    const t0 = Date.now();
    const args = ['serve', '-U', '-', 'data', text, ...(size.startsWith('size=') ? [size] : [])];
    // A regression eats memory fast: the server is killed after 15 s whatever it does.
    const r = await nbd([...args, '--run', 'nbdinfo --size "$uri"; grep VmHWM /proc/$PPID/status'], { timeout: 15_000 });
    expect(Date.now() - t0).toBeLessThan(10_000);
    if (what.startsWith('serves')) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^1048576\n/);
      const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(r.stdout)?.[1]);
      expect(hwm * 1024).toBeLessThan(256 * 1024 * 1024);
    } else {
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(what.includes('4 Gi') ? /takes more than 4294967296 steps/ : /reaches beyond 2\^53 - 1 bytes/);
    }
  });

  test('a byte over 255 is refused, as nbdkit refuses it', async () => {
    expect((await run('nbdkit', ['-U', '-', 'data', '256', '--run', 'true'])).code).not.toBe(0);
    expect((await nbd(['serve', '-U', '-', 'data', '256', '--run', 'true'])).stderr).toMatch(/byte 256 is larger than 255/);
  });
});
