// What the copy loop sees of its two ends: a Source reads (and may map zero extents),
// a Sink writes and zeroes. Every kind of endpoint (endpoints.ts: NBD exports, files,
// streams, `null:`) is opened as one of these.
import type { ClientTlsOptions } from '@nbd/client';

/** Where a copy reads from. */
export interface Source {
  /** How messages name it (as the user did). */
  name?: string;
  /** Bytes to copy; undefined for a stream read to its end (standard input). */
  size: number | undefined;
  /** NBD connections open (1 for anything else). */
  connections: number;
  /** The data, and `release` to call once it was written (it may be lent from a read buffer that is reused). */
  read(offset: number, length: number, signal?: AbortSignal): Promise<{ data: Uint8Array; release: () => void }>;
  /** Zero/non-zero runs from `offset`, covering at least one byte; absent: no map. */
  extents?(offset: number, length: number, signal?: AbortSignal): Promise<{ length: number; zero: boolean }[]>;
  /** A stream source's chunks, in order (standard input). */
  stream?: AsyncIterable<Uint8Array>;
  close(): Promise<void>;
}

/** Where a copy writes to. */
export interface Sink {
  /** How messages name it (as the user did). */
  name?: string;
  /** Bytes it holds; undefined when it grows (files) or has no end (null:, standard output). */
  size: number | undefined;
  connections: number;
  /** Reads as zeroes already: zero ranges are skipped. */
  knownZero: boolean;
  /** Writes must come in offset order (standard output): the sink orders them itself. */
  sequential: boolean;
  write(buf: Uint8Array, offset: number, signal?: AbortSignal): Promise<void>;
  zero(offset: number, length: number, signal?: AbortSignal): Promise<void>;
  /** All written: set the final size, flush if asked. */
  finish(size: number, flush: boolean): Promise<void>;
  close(): Promise<void>;
}

/** What opening an endpoint needs of the copy's options. */
export interface EndpointOptions {
  connections?: number;
  sparse?: boolean;
  /** Ask an NBD source for base:allocation (default true, and only when `sparse`). */
  extents?: boolean;
  /** Zeroes stay allocated on the destination (NO_HOLE; no holes left in new files). */
  allocated?: boolean;
  destinationIsZero?: boolean;
  /** Create or truncate a destination file (default true; false when it is the source itself). */
  truncate?: boolean;
  /** TLS for NBD endpoints, over what their URIs say. */
  tls?: ClientTlsOptions;
  signal?: AbortSignal;
}
