// The endpoints a copy takes, and each opened as a Source or a Sink (ends.ts): NBD
// exports (URIs, addresses, streams, or an open ExportHandle), files, `null:` (a
// sink), and `-` (standard output as a sink, standard input as a source, as nbdcopy
// has them).
import type { FileHandle } from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { type ConnectTarget, type ExportHandle, isExportHandle } from '@nbd/client';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { EndpointOptions, Sink, Source } from './ends.js';
import { fileSink, fileSource, stdoutFileSink } from './file-endpoints.js';
import { describeHttp, httpSource, isHttpUrl } from './http-endpoints.js';
import { connectForCopy, nbdSink, nbdSource } from './nbd-endpoints.js';
import { nullSink, stdinSource, stdoutSink } from './stream-endpoints.js';

/**
 * One end of a copy: an NBD URI (`nbd://`, `nbd+unix://`, as a string or `URL`), `{ path }`
 * of an NBD server's unix socket, `{ host, port }` of one, a connected Duplex to one, an
 * open export (an `ExportHandle`: a `Connection` or `MultiConnection`), a file path (or
 * `file:` URL), an open `FileHandle`, `null:` (a destination that discards), or `-`
 * (standard output as a destination, standard input as a source).
 */
export type CopyEndpoint = string | URL | { path: string } | { host?: string; port?: number } | Duplex | ExportHandle | FileHandle;

const NBD_SCHEME = /^nbds?(\+[a-z]+)?:\/\//i;

/** What an endpoint is. */
export type Kind =
  | { kind: 'nbd'; conn: ExportHandle }
  | { kind: 'connect'; target: ConnectTarget }
  | { kind: 'file'; path: string }
  | { kind: 'handle'; fh: FileHandle }
  | { kind: 'null' }
  | { kind: 'stdio' };

export function kindOf(e: CopyEndpoint): Kind {
  if (isExportHandle(e)) return { kind: 'nbd', conn: e };
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

async function nbdOf(k: Kind, opts: EndpointOptions, map: boolean): Promise<{ conn: ExportHandle; owned: boolean } | undefined> {
  if (k.kind === 'nbd') return { conn: k.conn, owned: false };
  if (k.kind !== 'connect') return undefined;
  return { conn: await connectForCopy(k.target, opts, map), owned: true };
}

/** An NBD source's allocation map is asked for. */
const usesMap = (opts: EndpointOptions) => opts.sparse !== false && opts.extents !== false;

/** Opens `e` for reading. */
export async function openSource(e: CopyEndpoint, opts: EndpointOptions): Promise<Source> {
  const s = await openSourceOf(e, opts);
  s.name = describeEndpoint(e, 'source');
  return s;
}

async function openSourceOf(e: CopyEndpoint, opts: EndpointOptions): Promise<Source> {
  if (isHttpUrl(e)) return httpSource(e, opts);
  const k = kindOf(e);
  if (k.kind === 'null') throw new NbdInvalidArgumentError('copy: null: is a destination only');
  if (k.kind === 'stdio') return stdinSource(process.stdin);
  if (k.kind === 'file') return fileSource(k.path, undefined, opts);
  if (k.kind === 'handle') return fileSource(undefined, k.fh, opts);
  const { conn, owned } = (await nbdOf(k, opts, usesMap(opts)))!;
  return nbdSource(conn, owned, usesMap(opts));
}

/**
 * Opens `e` for writing. `joining`: a worker thread's second handle on a destination
 * the copying thread already opened (a file is not truncated, and only synced at the end).
 */
export async function openSink(e: CopyEndpoint, opts: EndpointOptions, joining = false): Promise<Sink> {
  const s = await openSinkOf(e, opts, joining);
  s.name = describeEndpoint(e, 'destination');
  return s;
}

async function openSinkOf(e: CopyEndpoint, opts: EndpointOptions, joining: boolean): Promise<Sink> {
  if (isHttpUrl(e)) throw new NbdInvalidArgumentError(`copy: ${describeHttp(e)} is an HTTP URL, a source only`);
  const k = kindOf(e);
  if (k.kind === 'null') return nullSink();
  if (k.kind === 'stdio') return (await stdoutFileSink(opts)) ?? stdoutSink(process.stdout);
  if (k.kind === 'file') return fileSink(k.path, undefined, opts, joining);
  if (k.kind === 'handle') return fileSink(undefined, k.fh, opts, joining);
  const { conn, owned } = (await nbdOf(k, opts, false))!;
  try {
    return nbdSink(conn, owned, opts, describeEndpoint(e));
  } catch (err) {
    if (owned) await conn.disconnect().catch(() => {});
    throw err;
  }
}

/** How messages name an endpoint: as the user gave it, or what kind of thing it is. */
export function describeEndpoint(e: CopyEndpoint, role: 'source' | 'destination' = 'destination'): string {
  if (e === '-') return role === 'source' ? 'standard input' : 'standard output';
  if (isHttpUrl(e)) return describeHttp(e);
  if (typeof e === 'string') return e;
  if (e instanceof URL) return e.href;
  const k = kindOf(e);
  if (k.kind === 'handle') return `file descriptor ${k.fh.fd}`;
  if (k.kind === 'connect' && typeof (k.target as { path?: unknown }).path === 'string')
    return `NBD socket ${(k.target as { path: string }).path}`;
  if (k.kind === 'connect' && typeof (k.target as { host?: unknown }).host === 'string') {
    const t = k.target as { host: string; port?: number };
    return `NBD server ${t.host}:${t.port ?? 10809}`;
  }
  return `the ${role} (${k.kind === 'nbd' ? 'an open connection' : 'a stream'})`;
}
