import { Errno, OptionReply, nameOf } from './constants.js';

/** A malformed or hostile byte stream: the connection cannot continue in sync. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

/**
 * A failed NBD request: carries the errno that crosses (or crossed) the wire.
 * Servers throw it from device methods to choose the reply's error; clients
 * reject with it when the server answers with an error.
 */
export class NbdError extends Error {
  override readonly name = 'NbdError';
  /** One of {@link Errno}; unknown values from a peer are kept as received. */
  readonly errno: number;
  /** `EIO`, `EINVAL`, … */
  readonly code: string;

  constructor(errno: number, message?: string, options?: { cause?: unknown }) {
    const code = nameOf(Errno, errno);
    super(message ? `${code}: ${message}` : code, options);
    this.errno = errno;
    this.code = code;
  }
}

/** An option the server refused during the handshake (a `NBD_REP_ERR_*` reply). */
export class NbdOptionError extends Error {
  override readonly name = 'NbdOptionError';
  /** The option that failed, one of `Option`. */
  readonly option: number;
  /** The error reply type, one of `OptionReply.ERR_*`. */
  readonly reply: number;
  /** `ERR_UNSUP`, `ERR_UNKNOWN`, … */
  readonly code: string;
  /** The server's own message, if it sent one. */
  readonly serverMessage: string;

  constructor(option: number, reply: number, serverMessage = '') {
    const code = nameOf(OptionReply, reply);
    super(`option ${option} refused: ${code}${serverMessage ? `: ${serverMessage}` : ''}`);
    this.option = option;
    this.reply = reply;
    this.code = code;
    this.serverMessage = serverMessage;
  }
}

// Node/POSIX error codes that map onto the spec's smaller errno set (as nbdkit does).
const errnoByCode: Record<string, number> = {
  EPERM: Errno.EPERM,
  EACCES: Errno.EPERM,
  EROFS: Errno.EPERM,
  EIO: Errno.EIO,
  ENOMEM: Errno.ENOMEM,
  EINVAL: Errno.EINVAL,
  ENOSPC: Errno.ENOSPC,
  EDQUOT: Errno.ENOSPC,
  EFBIG: Errno.ENOSPC,
  EOVERFLOW: Errno.EOVERFLOW,
  ENOTSUP: Errno.ENOTSUP,
  EOPNOTSUPP: Errno.ENOTSUP,
  ESHUTDOWN: Errno.ESHUTDOWN,
};

/**
 * The NBD errno for any thrown value: an {@link NbdError} keeps its own, a Node
 * error maps by its `code` (`ENOSPC`, `EROFS`, `EDQUOT`, …), anything else is EIO.
 */
export function toNbdErrno(err: unknown): number {
  if (err instanceof NbdError) return err.errno;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return errnoByCode[code] ?? Errno.EIO;
  return Errno.EIO;
}

/** A client SHOULD treat error values it does not know as EINVAL. */
export function normalizeErrno(errno: number): number {
  return Object.values(Errno).includes(errno as never) ? errno : Errno.EINVAL;
}
