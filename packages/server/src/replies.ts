// Replies as values: what the transmission engine decides, before any byte is
// written. The reply writer turns them into simple replies or chunks, depending on
// what was negotiated. Memory a reply carries (a leased buffer, a device's loan)
// belongs to the writer once the reply is sent.
import type { DeviceExtent } from './device.js';
import type { ReadLease } from './reply-buffers.js';

/** One piece of a READ answered in several chunks: data in a leased buffer, or a hole that reads as zeroes. */
export type ReadSegment = { offset: number; lease: ReadLease } | { offset: number; hole: number };

interface ReplyTo {
  cookie: bigint;
  /** The request's offset as sent (extended chunks echo it). */
  offset: bigint;
}

export type Reply =
  /** Success without data: a simple reply, or a NONE chunk under extended headers. */
  | (ReplyTo & { kind: 'ok' })
  /** Failure: a simple reply with the errno, or an ERROR chunk where chunks are allowed. */
  | (ReplyTo & { kind: 'error'; type: number; errno: number; message: string })
  /** A whole READ in one buffer leased from `ReplyOut.readLease`. */
  | (ReplyTo & { kind: 'data'; lease: ReadLease })
  /** A whole READ lent by the device (zero copy); `release` once the bytes are written. */
  | (ReplyTo & { kind: 'loan'; views: Uint8Array[]; release: () => void })
  /** A READ as data and hole chunks, in offset order (structured replies only). */
  | (ReplyTo & { kind: 'segments'; segments: ReadSegment[] })
  /** BLOCK_STATUS: the same extents for each of `contextIds`. */
  | (ReplyTo & { kind: 'block-status'; contextIds: number[]; extents: DeviceExtent[] });

/** Where the engine's replies go (the reply writer, or a test's list). */
export interface ReplyOut {
  /** A buffer for `length` bytes of READ data: it goes out in a `data` or `segments` reply, or is released unsent. */
  readLease(length: number): ReadLease;
  /** Takes `reply` and whatever memory it carries. */
  send(reply: Reply): void;
}
