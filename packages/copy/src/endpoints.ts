// The two ends of a copy, behind one small interface each: a Source reads (and may
// map zero extents), a Sink writes and zeroes. Endpoints are NBD exports (URIs,
// addresses, streams, or open connections), files, `null:` (a sink), and `-`
// (standard output as a sink, standard input as a source, as nbdcopy has them).
import type { FileHandle } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { AllocationState, MetaContext, NbdInvalidArgumentError } from '@nbd/protocol';
import { Connection, type ConnectTarget, MultiConnection, connectMulti } from '@nbd/client';
import { fileSink, fileSource } from './file-endpoints.js';
import { nullSink, stdinSource, stdoutSink } from './stream-endpoints.js';

/**
 * One end of a copy: an NBD URI (`nbd://`, `nbd+unix://`, as a string or `URL`), `{ path }`
 * of an NBD server's unix socket, `{ host, port }` of one, a connected Duplex to one, an
 * open `Connection` or `MultiConnection`, a file path (or `file:` URL), an open
 * `FileHandle`, `null:` (a destination that discards), or `-` (standard output as a
 * destination, standard input as a source).
 */
export type CopyEndpoint =
  | string
  | URL
  | { path: string }
  | { host?: string; port?: number }
  | Duplex
  | Connection
  | MultiConnection
  | FileHandle;

/** Where a copy reads from. */
export interface Source {
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
  signal?: AbortSignal;
}

const NBD_SCHEME = /^nbds?(\+[a-z]+)?:\/\//i;

/** What an endpoint is. */
type Kind =
  | { kind: 'nbd'; conn: Connection | MultiConnection }
  | { kind: 'connect'; target: ConnectTarget }
  | { kind: 'file'; path: string }
  | { kind: 'handle'; fh: FileHandle }
  | { kind: 'null' }
  | { kind: 'stdio' };

function kindOf(e: CopyEndpoint): Kind {
  if (isConnection(e)) return { kind: 'nbd', conn: e };
  if (typeof e === 'string') {
    if (e === 'null:') return { kind: 'null' };
    if (e === '-') return { kind: 'stdio' };
    if (NBD_SCHEME.test(e)) return { kind: 'connect', target: e };
    if (e === '') throw new NbdInvalidArgumentError('copy: an empty endpoint');
    return { kind: 'file', path: e };
  }
  if (e instanceof URL) return e.protocol === 'file:' ? { kind: 'file', path: fileURLToPath(e) } : { kind: 'connect', target: e };
  if (isFileHandle(e)) return { kind: 'handle', fh: e };
  if (isAddressOrStream(e)) return { kind: 'connect', target: e };
  throw new NbdInvalidArgumentError(`copy: not an endpoint: ${String(e)}`);
}

/** An open Connection or MultiConnection (by shape: another copy of @nbd/client's classes counts too). */
function isConnection(e: unknown): e is Connection | MultiConnection {
  if (e instanceof Connection || e instanceof MultiConnection) return true;
  const c = e as Partial<Connection> | null;
  return (
    typeof c === 'object' &&
    c !== null &&
    typeof c.readLent === 'function' &&
    typeof c.blockStatus === 'function' &&
    typeof c.info === 'object'
  );
}

/** `{ path }`, `{ host, port }`, or a connected stream. */
function isAddressOrStream(e: unknown): e is ConnectTarget {
  if (typeof e !== 'object' || e === null) return false;
  const a = e as { path?: unknown; host?: unknown; port?: unknown; pipe?: unknown };
  return typeof a.path === 'string' || typeof a.host === 'string' || typeof a.port === 'number' || typeof a.pipe === 'function';
}

function isFileHandle(e: unknown): e is FileHandle {
  const f = e as Partial<FileHandle> | null;
  return (
    typeof f === 'object' && f !== null && typeof f.fd === 'number' && typeof f.stat === 'function' && typeof f.truncate === 'function'
  );
}

/** An endpoint that worker threads can open again by themselves: a URI, a path, or null:. */
export function reopenable(e: CopyEndpoint): e is string {
  return typeof e === 'string' && e !== '-';
}

/** A destination that is a file path (opened, and truncated, only once the source is known to be there). */
export function isFilePath(e: CopyEndpoint): boolean {
  return kindOf(e).kind === 'file';
}

async function nbdOf(
  k: Kind,
  opts: EndpointOptions,
  forSource: boolean,
): Promise<{ conn: Connection | MultiConnection; owned: boolean } | undefined> {
  if (k.kind === 'nbd') return { conn: k.conn, owned: false };
  if (k.kind !== 'connect') return undefined;
  const conn = await connectMulti(k.target, {
    connections: opts.connections ?? 4,
    metaContexts: forSource && usesMap(opts) ? [MetaContext.BASE_ALLOCATION] : [],
    signal: opts.signal,
  });
  return { conn, owned: true };
}

/** An NBD source's allocation map is asked for. */
const usesMap = (opts: EndpointOptions) => opts.sparse !== false && opts.extents !== false;

const lanes = (c: Connection | MultiConnection) => (c instanceof MultiConnection ? c.connections.length : 1);

/** Opens `e` for reading. */
export async function openSource(e: CopyEndpoint, opts: EndpointOptions): Promise<Source> {
  const k = kindOf(e);
  if (k.kind === 'null') throw new NbdInvalidArgumentError('copy: null: is a destination only');
  if (k.kind === 'stdio') return stdinSource(process.stdin);
  if (k.kind === 'file') return fileSource(k.path, undefined);
  if (k.kind === 'handle') return fileSource(undefined, k.fh);
  const { conn, owned } = (await nbdOf(k, opts, true))!;
  const hasMap = usesMap(opts) && conn.metaContexts.has(MetaContext.BASE_ALLOCATION);
  return {
    size: conn.info.size,
    connections: lanes(conn),
    read: async (off, len, signal) => conn.readLent(off, len, { signal }),
    extents: hasMap
      ? async (off, len, signal) => {
          const m = await conn.blockStatus(off, len, { contexts: [MetaContext.BASE_ALLOCATION], signal });
          return (m.get(MetaContext.BASE_ALLOCATION) ?? []).map((x) => ({
            length: x.length,
            zero: (x.flags & AllocationState.ZERO) !== 0,
          }));
        }
      : undefined,
    close: async () => {
      if (owned) await conn.disconnect();
    },
  };
}

/**
 * Opens `e` for writing. `joining`: a worker thread's second handle on a destination
 * the copying thread already opened (a file is not truncated, and only synced at the end).
 */
export async function openSink(e: CopyEndpoint, opts: EndpointOptions, joining = false): Promise<Sink> {
  const k = kindOf(e);
  if (k.kind === 'null') return nullSink();
  if (k.kind === 'stdio') return stdoutSink(process.stdout);
  if (k.kind === 'file') return fileSink(k.path, undefined, opts, joining);
  if (k.kind === 'handle') return fileSink(undefined, k.fh, opts, joining);
  const { conn, owned } = (await nbdOf(k, opts, false))!;
  let zeroes: Uint8Array | undefined;
  return {
    size: conn.info.size,
    connections: lanes(conn),
    knownZero: opts.destinationIsZero ?? false,
    sequential: false,
    write: (buf, off, signal) => conn.write(buf, off, { signal }),
    zero: async (off, len, signal) => {
      if (conn.info.can.zero) return conn.zero(off, len, { signal, noHole: opts.allocated === true });
      zeroes ??= new Uint8Array(Math.min(len, 1 << 20));
      for (let pos = 0; pos < len; pos += zeroes.length) {
        const n = Math.min(zeroes.length, len - pos);
        await conn.write(zeroes.subarray(0, n), off + pos, { signal });
      }
    },
    finish: async (_size, flush) => {
      if (flush && conn.info.can.flush) await conn.flush();
    },
    close: async () => {
      if (owned) await conn.disconnect();
    },
  };
}
