// One check of every request before any device call: command, flags, what was
// advertised, read-only, range, alignment and payload size.
import { Command, CommandFlag, Errno, flagNames, nameOf, type Request, TransmissionFlag } from '@nbd/protocol';
import type { Session } from './session.js';

export interface Rejection {
  errno: number;
  message: string;
}

const reject = (errno: number, message: string): Rejection => ({ errno, message });

/** "NBD_CMD_WRITE"; "command 0x2a" for a number the protocol does not define. */
export function commandName(type: number): string {
  const name = nameOf(Command, type);
  return name.startsWith('0x') ? `command ${name}` : `NBD_CMD_${name}`;
}

// Flags each command may carry at all (advertisement is checked separately).
const allowedFlags: Record<number, number> = {
  [Command.READ]: CommandFlag.FUA | CommandFlag.DF,
  [Command.WRITE]: CommandFlag.FUA | CommandFlag.PAYLOAD_LEN,
  [Command.FLUSH]: CommandFlag.FUA,
  [Command.TRIM]: CommandFlag.FUA,
  [Command.CACHE]: CommandFlag.FUA,
  [Command.WRITE_ZEROES]: CommandFlag.FUA | CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO,
  [Command.BLOCK_STATUS]: CommandFlag.FUA | CommandFlag.REQ_ONE | CommandFlag.PAYLOAD_LEN,
};

// The transmission flag a command needs to have been advertised.
const neededFlag: Record<number, number> = {
  [Command.FLUSH]: TransmissionFlag.SEND_FLUSH,
  [Command.TRIM]: TransmissionFlag.SEND_TRIM,
  [Command.CACHE]: TransmissionFlag.SEND_CACHE,
  [Command.WRITE_ZEROES]: TransmissionFlag.SEND_WRITE_ZEROES,
};

/**
 * Checks a request (DISC excluded) against the session. `length` is the effect
 * length (for an extended BLOCK_STATUS with payload, the one in the payload).
 * `oversized` says the decoder dropped a payload larger than the maximum.
 * Returns undefined when the request may go to the device.
 */
export function validateRequest(req: Request, length: bigint, s: Session, oversized = false): Rejection | undefined {
  const { type, flags } = req;
  const allowed = allowedFlags[type];
  if (allowed === undefined) return reject(Errno.EINVAL, `unknown or unsupported ${commandName(type)}`);
  if ((flags & ~allowed) !== 0) {
    return reject(Errno.EINVAL, `flags ${flagNames(CommandFlag, flags & ~allowed).join('|')} are not allowed on ${commandName(type)}`);
  }
  const tflags = s.flags;

  // Read-only first: TRIM and WRITE_ZEROES are not advertised on a read-only export, and the
  // spec asks for EPERM (not "not advertised") when a client tries to write there.
  const writes = type === Command.WRITE || type === Command.TRIM || type === Command.WRITE_ZEROES;
  if (writes && (tflags & TransmissionFlag.READ_ONLY) !== 0) return reject(Errno.EPERM, 'export is read-only');

  // Flags that need an advertisement or a negotiated feature.
  if ((flags & CommandFlag.FUA) !== 0 && (tflags & TransmissionFlag.SEND_FUA) === 0) return reject(Errno.EINVAL, 'FUA was not advertised');
  if ((flags & CommandFlag.DF) !== 0 && (tflags & TransmissionFlag.SEND_DF) === 0) return reject(Errno.EINVAL, 'DF was not advertised');
  if ((flags & CommandFlag.FAST_ZERO) !== 0 && (tflags & TransmissionFlag.SEND_FAST_ZERO) === 0) {
    return reject(Errno.EINVAL, 'FAST_ZERO was not advertised');
  }
  if ((flags & CommandFlag.PAYLOAD_LEN) !== 0) {
    if (!s.extended) return reject(Errno.EINVAL, 'PAYLOAD_LEN without extended headers');
    if (type === Command.BLOCK_STATUS && (tflags & TransmissionFlag.BLOCK_STATUS_PAYLOAD) === 0) {
      return reject(Errno.EINVAL, 'BLOCK_STATUS payload was not advertised');
    }
  }
  // An extended WRITE without PAYLOAD_LEN is accepted: its length is unambiguous, and qemu 10
  // sends it so (the extension says a client MUST set the flag; see docs/interop.md).
  const needed = neededFlag[type];
  if (needed !== undefined && (tflags & needed) === 0) return reject(Errno.EINVAL, `${commandName(type)} was not advertised`);
  if (type === Command.BLOCK_STATUS) {
    if (!s.structured) return reject(Errno.EINVAL, 'BLOCK_STATUS needs structured replies');
    if (s.metaContexts.size === 0) return reject(Errno.EINVAL, 'BLOCK_STATUS without a selected meta context');
  }
  if (type === Command.FLUSH) return undefined; // offset and length carry nothing

  // Payload size before range: an oversized WRITE was already drained. EOVERFLOW only for
  // a request without a payload (READ): the spec says not to use it for one that carries one.
  const max = s.blockSizes.max;
  if (oversized || (type === Command.WRITE && length > max)) {
    return reject(Errno.EINVAL, `payload of ${length} bytes exceeds the maximum payload ${max}`);
  }
  if (type === Command.READ && length > max) return reject(Errno.EOVERFLOW, `length ${length} exceeds the maximum payload ${max}`);
  if (length === 0n) return reject(Errno.EINVAL, 'zero-length request');
  const size = s.export.size;
  // Mixed bigint/number comparisons: exact, and no allocation.
  if (req.offset > size || length > size - Number(req.offset)) {
    const errno = type === Command.WRITE || type === Command.WRITE_ZEROES ? Errno.ENOSPC : Errno.EINVAL;
    return reject(errno, `range ${req.offset}+${length} is beyond the export size ${size}`);
  }
  const min = s.blockSizes.min;
  if (min > 1) {
    const off = Number(req.offset);
    const end = off + Number(length);
    // The final block of an export whose size is not a multiple of `min` may be short.
    if (off % min !== 0 || (end % min !== 0 && end !== size)) {
      return reject(Errno.EINVAL, `request ${off}+${length} is not aligned to ${min}`);
    }
  }
  return undefined;
}
