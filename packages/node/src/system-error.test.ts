import { describe, expect, test } from 'vitest';
import { errnoName, NbdSystemError } from './system-error.js';

describe('errno mapping', () => {
  test('names come from the OS table, unknown ones stay numeric', () => {
    expect(errnoName(1)).toBe('EPERM');
    expect(errnoName(-16)).toBe('EBUSY');
    expect(errnoName(9999)).toBe('E9999');
  });

  test.each([
    [1, /EPERM: needs root or CAP_SYS_ADMIN/],
    [16, /EBUSY: the device is busy/],
    [2, /ENOENT: .*modprobe nbd/],
    [22, /EINVAL: .*CAN_MULTI_CONN/],
    [28, /ENOSPC: no dead connection to replace/],
  ])('errno %i gets a hint', (errno, re) => {
    const e = NbdSystemError.fromErrno(errno, 'netlink NBD connect');
    expect(e).toBeInstanceOf(Error);
    expect(e.message).toMatch(/^netlink NBD connect: /);
    expect(e.message).toMatch(re);
    expect(e.errno).toBe(errno);
  });

  test("the kernel's own text wins over the generic hint", () => {
    expect(NbdSystemError.fromErrno(-22, 'x', 'nbd: must specify a size').message).toBe('x: EINVAL: nbd: must specify a size');
  });
});
