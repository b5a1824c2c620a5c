// One error family for every package: a base class with a stable `code` per kind,
// `cause` always kept, fields declared. Catch `NbdError` for anything this SDK
// throws, then switch on `code` (undici's lib/core/errors.js does the same).
import { Errno, nameOf, Option, OptionReply } from './constants.js';

/** The stable codes of {@link NbdError}, one per kind of failure. */
export const ErrorCode = {
  /** The connection is closed, or closed while the call waited. */
  CLOSED: 'NBD_ERR_CLOSED',
  /** The caller's AbortSignal fired; `cause` is its reason. */
  ABORTED: 'NBD_ERR_ABORTED',
  /** A time limit passed (handshake limit, request timeout). */
  TIMEOUT: 'NBD_ERR_TIMEOUT',
  /** The caller's own mistake (a bad offset, an option the export lacks); nothing was sent. */
  INVALID_ARGUMENT: 'NBD_ERR_INVALID_ARGUMENT',
  /** A call not allowed in the object's current state (e.g. `info()` after `go()`). */
  STATE: 'NBD_ERR_STATE',
  /** The peer broke the protocol; the connection cannot go on. */
  PROTOCOL: 'NBD_ERR_PROTOCOL',
  /** A request failed with an NBD errno (from the server, or chosen by a device). */
  ERRNO: 'NBD_ERR_ERRNO',
  /** The server refused a handshake option (`NBD_REP_ERR_*`). */
  OPTION_REFUSED: 'NBD_ERR_OPTION_REFUSED',
  /** The peer does not offer what was asked (a feature, a handshake style). */
  UNSUPPORTED: 'NBD_ERR_UNSUPPORTED',
  /** The operating system refused (a syscall's errno, e.g. from the kernel NBD driver). */
  SYSTEM: 'NBD_ERR_SYSTEM',
  /** This Node.js is older than the packages need (`engines.node`); nothing else ran. */
  NODE_VERSION: 'NBD_ERR_NODE_VERSION',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The base of every error this SDK throws. `code` tells the kind; `cause` keeps the underlying error. */
export class NbdError extends Error {
  /** `'NbdError'`, as shown in stack traces. */
  override name = 'NbdError';
  /** What kind of failure, one of {@link ErrorCode} (`NBD_ERR_CLOSED`, …): stable, unlike messages. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** The connection is (or became) closed. */
export class NbdClosedError extends NbdError {
  /** `'NbdClosedError'`, as shown in stack traces. */
  override name = 'NbdClosedError';
  constructor(message = 'the connection is closed', options?: { cause?: unknown }) {
    super(ErrorCode.CLOSED, message, options);
  }
}

/** The caller's signal aborted the call; `cause` is `signal.reason`. */
export class NbdAbortError extends NbdError {
  /** `'AbortError'`, as DOM and Node name aborts, so code that checks `err.name === 'AbortError'` works. */
  override name = 'AbortError';
  constructor(message = 'the operation was aborted', options?: { cause?: unknown }) {
    super(ErrorCode.ABORTED, message, options);
  }
}

/** A time limit passed. */
export class NbdTimeoutError extends NbdError {
  /** `'NbdTimeoutError'`, as shown in stack traces. */
  override name = 'NbdTimeoutError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.TIMEOUT, message, options);
  }
}

/** The caller passed something invalid; nothing went on the wire. */
export class NbdInvalidArgumentError extends NbdError {
  /** `'NbdInvalidArgumentError'`, as shown in stack traces. */
  override name = 'NbdInvalidArgumentError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.INVALID_ARGUMENT, message, options);
  }
}

/** A call that the object's current state does not permit. */
export class NbdStateError extends NbdError {
  /** `'NbdStateError'`, as shown in stack traces. */
  override name = 'NbdStateError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.STATE, message, options);
  }
}

/** The peer does not offer what was asked. */
export class NbdUnsupportedError extends NbdError {
  /** `'NbdUnsupportedError'`, as shown in stack traces. */
  override name = 'NbdUnsupportedError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.UNSUPPORTED, message, options);
  }
}

/** A malformed or hostile byte stream: the connection cannot continue in sync. */
export class ProtocolError extends NbdError {
  /** `'ProtocolError'`, as shown in stack traces. */
  override name = 'ProtocolError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.PROTOCOL, message, options);
  }
}

// What each errno of the spec means, in the words C libraries' strerror() uses.
const errnoMeaning: Record<number, string> = {
  [Errno.EPERM]: 'Operation not permitted',
  [Errno.EIO]: 'Input/output error',
  [Errno.ENOMEM]: 'Cannot allocate memory',
  [Errno.EINVAL]: 'Invalid argument',
  [Errno.ENOSPC]: 'No space left on device',
  [Errno.EOVERFLOW]: 'Value too large for defined data type',
  [Errno.ENOTSUP]: 'Operation not supported',
  [Errno.ESHUTDOWN]: 'Cannot send after transport endpoint shutdown',
};

/** An NBD errno for people: `EIO (Input/output error)`; an unknown value is its name alone. */
export function describeErrno(errno: number): string {
  const name = nameOf(Errno, errno);
  const meaning = errnoMeaning[errno];
  return meaning === undefined ? name : `${name} (${meaning})`;
}

/**
 * `text` without a leading errno name of its own (`EIO: …` or `EIO (…): …`): our
 * server sends a device's whole message, which already starts with it, so the
 * client would otherwise say the name twice (`EIO: EIO: disk on fire`).
 */
function withoutErrnoPrefix(errno: number, text: string): string {
  const name = nameOf(Errno, errno);
  for (const prefix of [`${describeErrno(errno)}: `, `${name}: `]) if (text.startsWith(prefix)) return text.slice(prefix.length);
  return text;
}

/**
 * A failed NBD request: carries the errno that crosses (or crossed) the wire.
 * Devices throw it to choose the reply's error; clients reject with it when the
 * server answers with an error. The message says the errno once, then the text:
 * `EIO (Input/output error): disk on fire`.
 */
export class NbdErrnoError extends NbdError {
  /** `'NbdErrnoError'`, as shown in stack traces. */
  override name = 'NbdErrnoError';
  /** One of {@link Errno}; unknown values from a peer are kept as received. */
  readonly errno: number;
  /** `EIO`, `EINVAL`, … */
  readonly errnoName: string;
  /**
   * The text that came with the errno, without its name: the server's message in a
   * client's error, a device's words in a server's; empty when there was none.
   */
  readonly detail: string;
  /** For an `NBD_REPLY_TYPE_ERROR_OFFSET` reply: where the error happened. */
  readonly offset: number | undefined;

  constructor(errno: number, message?: string, options?: { cause?: unknown; offset?: number }) {
    const detail = message ? withoutErrnoPrefix(errno, message) : '';
    super(ErrorCode.ERRNO, detail ? `${describeErrno(errno)}: ${detail}` : describeErrno(errno), options);
    this.errno = errno;
    this.errnoName = nameOf(Errno, errno);
    this.detail = detail;
    this.offset = options?.offset;
  }
}

/** An option the server refused during the handshake (a `NBD_REP_ERR_*` reply). */
export class NbdOptionError extends NbdError {
  /** `'NbdOptionError'`, as shown in stack traces. */
  override name = 'NbdOptionError';
  /** The option that failed, one of `Option`. */
  readonly option: number;
  /** The error reply type, one of `OptionReply.ERR_*`. */
  readonly reply: number;
  /** `ERR_UNSUP`, `ERR_UNKNOWN`, … */
  readonly replyName: string;
  /** The server's own message, if it sent one. */
  readonly serverMessage: string;

  constructor(option: number, reply: number, serverMessage = '', options?: { cause?: unknown }) {
    const replyName = nameOf(OptionReply, reply);
    super(
      ErrorCode.OPTION_REFUSED,
      `NBD_OPT_${nameOf(Option, option)} refused: ${replyName}${serverMessage ? `: ${serverMessage}` : ''}`,
      options,
    );
    this.option = option;
    this.reply = reply;
    this.replyName = replyName;
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
 * The NBD errno for any thrown value: an {@link NbdErrnoError} keeps its own, a Node
 * error maps by its `code` (`ENOSPC`, `EROFS`, `EDQUOT`, …), anything else is EIO.
 */
export function toNbdErrno(err: unknown): number {
  if (err instanceof NbdErrnoError) return err.errno;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return errnoByCode[code] ?? Errno.EIO;
  return Errno.EIO;
}

const knownErrnos = new Set<number>(Object.values(Errno));

/** Whether `errno` is one the protocol defines ({@link Errno}; 0 is not an error). */
export function isKnownErrno(errno: number): boolean {
  return knownErrnos.has(errno);
}

/** A client SHOULD treat error values it does not know as EINVAL. */
export function normalizeErrno(errno: number): number {
  return isKnownErrno(errno) ? errno : Errno.EINVAL;
}
