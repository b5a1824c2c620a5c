import { Command, CommandFlag, Errno, type Request } from '@nbd/protocol';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from './memory-device.js';
import type { Session } from './session.js';
import { transmissionFlags } from './session.js';
import { validateRequest } from './validate.js';

const SIZE = 1 << 20;
function session(over: Partial<Session> = {}, readOnly = false): Session {
  const device = new MemoryDevice(SIZE);
  return {
    export: { name: '', size: SIZE, device },
    device,
    flags: transmissionFlags(device, readOnly, true, false),
    blockSizes: { min: 1, preferred: 4096, max: 65536 },
    structured: true,
    extended: false,
    metaContexts: new Map([[1, 'base:allocation']]),
    ...over,
  };
}
const req = (type: number, offset: number, length: number, flags = 0): Request => ({
  type,
  flags,
  cookie: 1n,
  offset: BigInt(offset),
  length: BigInt(length),
});
const check = (r: Request, s = session(), oversized = false) => validateRequest(r, r.length, s, oversized)?.errno;

describe('validateRequest', () => {
  it('accepts ordinary requests', () => {
    expect(check(req(Command.READ, 0, 4096))).toBeUndefined();
    expect(check(req(Command.WRITE, SIZE - 1, 1, CommandFlag.FUA))).toBeUndefined();
    expect(check(req(Command.FLUSH, 0, 0))).toBeUndefined();
    expect(check(req(Command.WRITE_ZEROES, 0, SIZE, CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO))).toBeUndefined();
    expect(check(req(Command.BLOCK_STATUS, 0, SIZE, CommandFlag.REQ_ONE))).toBeUndefined();
    expect(check(req(Command.READ, 0, 4096, CommandFlag.DF))).toBeUndefined();
  });

  it('rejects unknown commands and flags', () => {
    expect(check(req(99, 0, 1))).toBe(Errno.EINVAL);
    expect(check(req(Command.RESIZE, 0, 1))).toBe(Errno.EINVAL);
    expect(check(req(Command.READ, 0, 1, CommandFlag.NO_HOLE))).toBe(Errno.EINVAL);
    expect(check(req(Command.WRITE, 0, 1, CommandFlag.PAYLOAD_LEN))).toBe(Errno.EINVAL); // not extended
    expect(
      check(req(Command.READ, 0, 1, CommandFlag.DF), session({ flags: transmissionFlags(new MemoryDevice(1), false, false, false) })),
    ).toBe(Errno.EINVAL);
  });

  it('messages name commands and flags, not their numbers', () => {
    const message = (r: Request, s = session()) => validateRequest(r, r.length, s)?.message;
    expect(message(req(Command.RESIZE, 0, 1))).toBe('unknown or unsupported NBD_CMD_RESIZE');
    expect(message(req(0x2a, 0, 1))).toBe('unknown or unsupported command 0x2a');
    expect(message(req(Command.READ, 0, 1, CommandFlag.NO_HOLE | 0x40))).toBe('flags NO_HOLE|0x40 are not allowed on NBD_CMD_READ');
    const bare = session({ flags: transmissionFlags({ readAt: () => {} }, false, true, false) });
    expect(message(req(Command.TRIM, 0, 1), bare)).toBe('NBD_CMD_TRIM was not advertised');
  });

  it('ranges: EINVAL past the end, ENOSPC for writes, zero length, overflow', () => {
    expect(check(req(Command.READ, SIZE, 1))).toBe(Errno.EINVAL);
    expect(check(req(Command.TRIM, SIZE - 1, 2))).toBe(Errno.EINVAL);
    expect(check(req(Command.WRITE, SIZE - 1, 2))).toBe(Errno.ENOSPC);
    expect(check(req(Command.WRITE_ZEROES, SIZE, 1))).toBe(Errno.ENOSPC);
    expect(check(req(Command.READ, 0, 0))).toBe(Errno.EINVAL);
    const r = { ...req(Command.READ, 0, 1), offset: 2n ** 64n - 1n };
    expect(check(r)).toBe(Errno.EINVAL);
  });

  it('payload limits: EOVERFLOW for a READ, EINVAL for a WRITE (the spec: not EOVERFLOW for a command with a payload)', () => {
    expect(check(req(Command.READ, 0, 65537))).toBe(Errno.EOVERFLOW);
    expect(check(req(Command.WRITE, 0, 65537))).toBe(Errno.EINVAL);
    expect(check(req(Command.WRITE, 0, 10), session(), true)).toBe(Errno.EINVAL);
    expect(check(req(Command.TRIM, 0, SIZE))).toBeUndefined(); // no payload: not limited
  });

  it('read-only: EPERM for writes, reads fine', () => {
    const s = session({}, true);
    s.flags = transmissionFlags(s.device, true, true, false);
    expect(check(req(Command.WRITE, 0, 1), s)).toBe(Errno.EPERM);
    expect(check(req(Command.READ, 0, 1), s)).toBeUndefined();
    // Not advertised on a read-only export, but the spec asks for EPERM for any write there.
    expect(check(req(Command.TRIM, 0, 1), s)).toBe(Errno.EPERM);
    expect(check(req(Command.WRITE_ZEROES, 0, 1), s)).toBe(Errno.EPERM);
  });

  it('alignment when a minimum block size is set', () => {
    const s = session({ blockSizes: { min: 512, preferred: 4096, max: 65536 } });
    expect(check(req(Command.READ, 512, 1024), s)).toBeUndefined();
    expect(check(req(Command.READ, 1, 512), s)).toBe(Errno.EINVAL);
    expect(check(req(Command.READ, 0, 100), s)).toBe(Errno.EINVAL);
  });

  it('BLOCK_STATUS needs structured replies and a selected context', () => {
    expect(check(req(Command.BLOCK_STATUS, 0, 1), session({ metaContexts: new Map() }))).toBe(Errno.EINVAL);
    expect(check(req(Command.BLOCK_STATUS, 0, 1), session({ structured: false }))).toBe(Errno.EINVAL);
  });
});
