// The only state that crosses from negotiation to transmission, and how it is
// derived from an export and its device (nbdkit's protocol_common_open).
import { type BlockSizes, Limits, TransmissionFlag } from '@nbd/protocol';
import type { Device, Export } from './device.js';

export interface Session {
  export: Export;
  /** The device serving this connection (the export's, or one from `ServeOptions.open`). */
  device: Device;
  /** Transmission flags sent to the client. */
  flags: number;
  /** Constraints enforced on requests (advertised, or the spec's defaults: 1 / 4096 / maxPayload). */
  blockSizes: BlockSizes;
  structured: boolean;
  extended: boolean;
  /** Selected meta contexts for this export, by id (only `base:allocation` exists). */
  metaContexts: Map<number, string>;
}

/** Transmission flags for `device`, derived from what it implements. */
export function transmissionFlags(device: Device, readOnly: boolean, structured: boolean, extended: boolean): number {
  let f = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_CACHE;
  if (readOnly) f |= TransmissionFlag.READ_ONLY;
  if (device.sync) f |= TransmissionFlag.SEND_FLUSH;
  if (!readOnly) {
    f |= TransmissionFlag.SEND_WRITE_ZEROES;
    if (device.sync || device.fua) f |= TransmissionFlag.SEND_FUA;
    if (device.trim) f |= TransmissionFlag.SEND_TRIM;
    if (device.zero) f |= TransmissionFlag.SEND_FAST_ZERO;
  }
  if (structured) f |= TransmissionFlag.SEND_DF;
  if (device.multiConn) f |= TransmissionFlag.CAN_MULTI_CONN;
  if (device.rotational) f |= TransmissionFlag.ROTATIONAL;
  if (extended) f |= TransmissionFlag.BLOCK_STATUS_PAYLOAD;
  return f;
}

/** The block sizes a device gets: its own, capped by the server's maximum payload. */
export function blockSizesOf(device: Device, maxPayload: number): BlockSizes {
  const b = device.blockSizes;
  const min = b?.min ?? 1;
  const preferred = Math.max(b?.preferred ?? Limits.DEFAULT_PREFERRED_BLOCK, min);
  return { min, preferred, max: Math.max(Math.min(b?.max ?? maxPayload, maxPayload), min) };
}

/** Whether writes are refused: server-wide, per export, or because the device cannot write. */
export function isReadOnly(exp: Export, device: Device, serverReadOnly: boolean): boolean {
  return serverReadOnly || exp.readOnly === true || device.readOnly === true || device.writeAt === undefined;
}

/** The session of a connection that skips negotiation (oldstyle, or a socket handed to the kernel). */
export function plainSession(exp: Export, device: Device, opts: { readOnly: boolean; maxPayload: number }): Session {
  return {
    export: exp,
    device,
    flags: transmissionFlags(device, isReadOnly(exp, device, opts.readOnly), false, false),
    blockSizes: blockSizesOf(device, opts.maxPayload),
    structured: false,
    extended: false,
    metaContexts: new Map(),
  };
}
