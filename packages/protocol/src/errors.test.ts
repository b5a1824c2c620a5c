import { describe, expect, it } from 'vitest';
import { Errno } from './constants.js';
import { describeErrno, NbdErrnoError } from './errors.js';

describe('NbdErrnoError', () => {
  it('says the errno once, with its meaning, then the text; errno and text stay fields', () => {
    const e = new NbdErrnoError(Errno.EIO, 'disk on fire');
    expect(e.message).toBe('EIO (Input/output error): disk on fire');
    expect(e).toMatchObject({ errno: Errno.EIO, errnoName: 'EIO', detail: 'disk on fire' });
  });

  it.each([
    ['our server sends a device error whole (the old form)', 'EIO: disk on fire'],
    ['our server sends a device error whole (this form)', 'EIO (Input/output error): disk on fire'],
  ])('a text that already starts with its own errno is not prefixed twice: %s', (_why, text) => {
    const e = new NbdErrnoError(Errno.EIO, text);
    expect(e.message).toBe('EIO (Input/output error): disk on fire');
    expect(e.detail).toBe('disk on fire');
  });

  it("keeps another errno's name in the text (it is the server's words, not a repeat)", () => {
    expect(new NbdErrnoError(Errno.EINVAL, 'EIO: x').message).toBe('EINVAL (Invalid argument): EIO: x');
  });

  it('without a text: the errno and its meaning alone; an unknown errno: its name', () => {
    expect(new NbdErrnoError(Errno.ENOSPC).message).toBe('ENOSPC (No space left on device)');
    expect(new NbdErrnoError(Errno.ENOSPC, '').detail).toBe('');
    expect(describeErrno(0x7b)).toBe('0x7b');
  });
});
