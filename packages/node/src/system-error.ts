// Errors from the operating system (a syscall's errno), with a hint that says what
// to do about it: the raw errno alone rarely does.
import { constants } from 'node:os';
import { ErrorCode, NbdError } from '@nbd/protocol';

const nameByErrno = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** Name of an errno value ("EPERM"), or "E<n>" when unknown. */
export function errnoName(errno: number): string {
  return nameByErrno.get(Math.abs(errno)) ?? `E${Math.abs(errno)}`;
}

const hints: Record<string, string> = {
  EPERM: 'needs root or CAP_SYS_ADMIN',
  EACCES: 'needs root or CAP_SYS_ADMIN',
  EBUSY: 'the device is busy: already connected, or still held open',
  ENOENT: 'not found (is the nbd module loaded? modprobe nbd)',
  ENODEV: 'no such NBD device (modprobe nbd nbds_max=N, or let the kernel pick one)',
  ENXIO: 'no such NBD device (modprobe nbd nbds_max=N)',
  ENOSPC: 'no dead connection to replace (RECONFIGURE replaces only dead sockets)',
  EINVAL: 'the kernel rejected the parameters (size, block size 512..page size power of 2, several sockets without CAN_MULTI_CONN?)',
  EAFNOSUPPORT: 'netlink is not available here',
  EPROTONOSUPPORT: 'generic netlink is not available here',
  ENOTTY: 'not an NBD device',
};

/** A refusal by the kernel or libc: `errnoName` ("EBUSY") and `errno` say which. */
export class NbdSystemError extends NbdError {
  /** `'NbdSystemError'`, as shown in stack traces. */
  override name = 'NbdSystemError';
  /** The errno's name, "EBUSY"; "EPROTO" for a malformed kernel reply, "ETIMEDOUT" for a missing one. */
  readonly errnoName: string;
  /** The errno's number (0 when it did not come from a syscall). */
  readonly errno: number;

  constructor(message: string, errnoName: string, errno = 0, options?: { cause?: unknown }) {
    super(ErrorCode.SYSTEM, message, options);
    this.errnoName = errnoName;
    this.errno = errno;
  }

  /** `what: EPERM: needs root or CAP_SYS_ADMIN`. */
  static fromErrno(errno: number, what: string, hint?: string): NbdSystemError {
    const name = errnoName(errno);
    const h = hint ?? hints[name];
    return new NbdSystemError(`${what}: ${name}${h ? `: ${h}` : ''}`, name, Math.abs(errno));
  }
}
