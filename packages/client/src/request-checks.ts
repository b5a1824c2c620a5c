// The caller's own mistakes, found before anything is sent: a bad offset or length,
// a range past the export's end or off its block size, a command or flag the server
// did not advertise, a write to a read-only export. Each is an NbdInvalidArgumentError
// (no request went out), never an errno as if the server had answered.
import { CommandFlag, Limits, NbdInvalidArgumentError } from '@nbd/protocol';
import type { ExportInfo } from './export-info.js';

/** Largest payload per request we send even when the server allows more (the decoder's chunk limit). */
const MAX_REQUEST = Limits.DEFAULT_MAX_PAYLOAD;

/** How requests are cut: alignment and the largest aligned length of one request. */
export interface RequestLimits {
  align: number;
  piece: number;
}

/** The export's block sizes as request limits (requests larger than `piece` are split). */
export function requestLimits(info: ExportInfo): RequestLimits {
  const b = info.blockSizes;
  const align = b?.min ?? 1;
  const max = b && b.max !== Limits.NO_PAYLOAD_LIMIT ? Math.min(b.max, MAX_REQUEST) : MAX_REQUEST;
  return { align, piece: Math.max(align, max - (max % align)) };
}

/** Offset and length are safe non-negative integers, inside the export, aligned to its minimum block size. */
export function checkRange(info: ExportInfo, limits: RequestLimits, offset: number, length: number, what: string): void {
  if (!Number.isSafeInteger(offset) || offset < 0)
    throw new NbdInvalidArgumentError(`${what}: offset ${offset} is not a non-negative safe integer`);
  if (!Number.isSafeInteger(length) || length < 0)
    throw new NbdInvalidArgumentError(`${what}: length ${length} is not a non-negative safe integer`);
  if (offset + length > info.size) {
    throw new NbdInvalidArgumentError(`${what}: range ${offset}+${length} is beyond the end of the export (${info.size} bytes)`);
  }
  const a = limits.align;
  if (a > 1 && (offset % a !== 0 || length % a !== 0)) {
    throw new NbdInvalidArgumentError(`${what}: ${offset}+${length} is not aligned to the server's minimum block size ${a}`);
  }
}

/** Writes, trims and zeroes need a writable export. */
export function checkWritable(info: ExportInfo, what: string): void {
  if (info.is.readOnly) throw new NbdInvalidArgumentError(`${what}: the export is read-only`);
}

/** A command the server must have advertised (`can` false: refused here). */
export function checkCan(can: boolean, what: string, flag: string): void {
  if (!can) throw new NbdInvalidArgumentError(`the server does not support ${what} (no ${flag})`);
}

/** The FUA flag, if asked for and advertised. */
export function fuaFlag(info: ExportInfo, fua: boolean | undefined): number {
  if (!fua) return 0;
  checkCan(info.can.fua, 'FUA', 'SEND_FUA');
  return CommandFlag.FUA;
}

/** A buffer the caller passes in: a Uint8Array (a Buffer is one). */
export function checkBuffer(buf: unknown, what: string): asserts buf is Uint8Array {
  if (!(buf instanceof Uint8Array)) throw new NbdInvalidArgumentError(`${what}: the buffer must be a Uint8Array, got ${typeof buf}`);
}
