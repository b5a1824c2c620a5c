// `nbd devices` and `nbd attach --netlink` on a kernel without the nbd module: the
// library's message suggests its own option (`mode: 'ioctl'`); the command says its flag.
import { PassThrough } from 'node:stream';
import { describe, expect, test, vi } from 'vitest';
import { main } from './main.js';

vi.mock('@nbd/linux', async (load) => {
  const real = await load<typeof import('@nbd/linux')>();
  // What @nbd/linux throws when the generic netlink family "nbd" is missing.
  const missing = () =>
    new real.NbdSystemError(
      `generic netlink family "nbd" is missing: the nbd module is not loaded (modprobe nbd) or the kernel predates netlink NBD (use mode: 'ioctl')`,
      'ENOENT',
      2,
    );
  return {
    ...real,
    listDevices: () => [],
    status: async () => {
      throw missing();
    },
    NbdNetlink: {
      open: async () => {
        throw missing();
      },
    },
  };
});

async function run(argv: string[]): Promise<{ code: number; stderr: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let err = '';
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  stdout.resume();
  const code = await main(argv, { stdout, stderr, env: {} });
  return { code, stderr: err };
}

describe('without the nbd module', () => {
  test('nbd devices: says the module is not loaded, not a library option', async () => {
    const r = await run(['devices']);
    expect(r).toEqual({ code: 1, stderr: 'nbd devices: there are no NBD devices: the nbd module is not loaded (modprobe nbd)\n' });
  });

  test('nbd attach --netlink: names --ioctl, the flag the command takes', async () => {
    const r = await run(['attach', '--netlink', 'memory', '1M']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'nbd attach: the kernel has no nbd netlink family: load the nbd module (modprobe nbd), or use --ioctl on a kernel without netlink NBD\n',
    );
    expect(r.stderr).not.toMatch(/mode:/);
  });
});
