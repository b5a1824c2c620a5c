// One error type for everything the kernel or libc refuses, with a hint that says
// what to do about it (the raw errno alone rarely does).
import { constants } from 'node:os';

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

/** An error from the kernel or libc, with `errno`/`code` and a human hint. */
export class NbdLinuxError extends Error {
  override name = 'NbdLinuxError';
  readonly code: string;
  readonly errno: number;

  constructor(message: string, code: string, errno = 0) {
    super(message);
    this.code = code;
    this.errno = errno;
  }

  /** `what: EPERM (Operation not permitted): needs root or CAP_SYS_ADMIN`. */
  static fromErrno(errno: number, what: string, hint?: string): NbdLinuxError {
    const code = errnoName(errno);
    const h = hint ?? hints[code];
    return new NbdLinuxError(`${what}: ${code}${h ? `: ${h}` : ''}`, code, Math.abs(errno));
  }
}
