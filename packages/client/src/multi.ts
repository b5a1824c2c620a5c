// One call from target to transmission (`open`), and several connections to one
// export used as one (`connectMulti`): requests go to the least loaded connection;
// flush goes to all. Several only when the server advertises CAN_MULTI_CONN
// (otherwise caches need not be coherent across connections).
import { NbdInvalidArgumentError } from '@nbd/protocol';
import { Client } from './client.js';
import type { ConnectOptions, GoOptions } from './client-options.js';
import type { Connection } from './connection.js';
import { EXPORT_HANDLE, type ExportHandle, type Signal } from './export-handle.js';
import type { ExportInfo } from './export-info.js';
import { type ConnectTarget, isStreamTarget } from './target.js';

/** Options of `open()`: connecting, go(), and the export (default: the URI's). */
export type OpenOptions = GoOptions & ConnectOptions & { exportName?: string };

/**
 * Connects to `target` and enters transmission on its export (the URI's, or
 * `exportName`). `signal` covers connecting and negotiating.
 */
export async function open(target: ConnectTarget, opts: OpenOptions = {}): Promise<Connection> {
  const client = await Client.connect(target, opts);
  try {
    return await client.go(opts.exportName ?? client.defaultExport, opts);
  } catch (e) {
    await client.abort().catch(() => {});
    throw e;
  }
}

/** Several connections to one export, used as one: each request goes to the least busy connection. */
export class MultiConnection implements ExportHandle {
  readonly [EXPORT_HANDLE]: true = true;

  /** Takes `connections` (at least one, all to the same export) into use. */
  constructor(
    /** The connections in use; each request goes to the least busy one, `flush()` and `disconnect()` go to all. */
    readonly connections: readonly Connection[],
  ) {
    if (connections.length === 0) throw new NbdInvalidArgumentError('MultiConnection needs at least one connection');
  }

  /** The export, as the first connection saw it. */
  get info(): ExportInfo {
    return this.connections[0]!.info;
  }

  /** Selected metadata contexts, name → id (the first connection's). */
  get metaContexts(): ReadonlyMap<string, number> {
    return this.connections[0]!.metaContexts;
  }

  get connectionCount(): number {
    return this.connections.length;
  }

  /** Requests in flight on all connections. */
  get inFlight(): number {
    let n = 0;
    for (const c of this.connections) n += c.inFlight;
    return n;
  }

  /** The connection with the fewest requests in flight. */
  private pick(): Connection {
    let best = this.connections[0]!;
    for (const c of this.connections) if (c.inFlight < best.inFlight) best = c;
    return best;
  }

  // Each command goes to the least busy connection, as the ExportHandle it is (signatures and docs there).
  readonly read: ExportHandle['read'] = (offset, length, opts) => this.pick().read(offset, length, opts);
  readonly readLent: ExportHandle['readLent'] = (offset, length, opts) => this.pick().readLent(offset, length, opts);
  readonly readInto: ExportHandle['readInto'] = (buf, offset, opts) => this.pick().readInto(buf, offset, opts);
  readonly write: ExportHandle['write'] = (buf, offset, opts) => this.pick().write(buf, offset, opts);
  readonly trim: ExportHandle['trim'] = (offset, length, opts) => this.pick().trim(offset, length, opts);
  readonly zero: ExportHandle['zero'] = (offset, length, opts) => this.pick().zero(offset, length, opts);
  readonly cache: ExportHandle['cache'] = (offset, length, opts) => this.pick().cache(offset, length, opts);
  readonly blockStatus: ExportHandle['blockStatus'] = (offset, length, opts) => this.pick().blockStatus(offset, length, opts);

  /**
   * Flushes every connection. With CAN_MULTI_CONN one flush covers writes completed on any
   * connection, but flushing all also covers servers whose caches are per connection.
   */
  async flush(opts?: Signal): Promise<void> {
    await Promise.all(this.connections.map((c) => c.flush(opts)));
  }

  /** Disconnects every connection (see Connection.disconnect); rejects with the first failure. */
  async disconnect(opts?: Signal): Promise<void> {
    const results = await Promise.allSettled(this.connections.map((c) => c.disconnect(opts)));
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  /** `await using multi = await connectMulti(...)`: disconnects every connection. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.allSettled(this.connections.map((c) => c[Symbol.asyncDispose]()));
  }
}

/** Options of `connectMulti()`. */
export type ConnectMultiOptions = OpenOptions & {
  /** Connections to open (default 4); one when the server does not advertise CAN_MULTI_CONN. */
  connections?: number;
};

/**
 * Opens up to `connections` connections to `target` (default 4): as many as asked when
 * the server advertises CAN_MULTI_CONN, else just one. A stream target (a Duplex or a
 * Transport) can be connected once only: one connection.
 */
export async function connectMulti(target: ConnectTarget, opts: ConnectMultiOptions = {}): Promise<MultiConnection> {
  const want = opts.connections ?? 4;
  if (!Number.isInteger(want) || want < 1) throw new NbdInvalidArgumentError(`connections must be a positive integer, got ${want}`);
  const first = await open(target, opts);
  const conns = [first];
  if (want > 1 && first.info.can.multiConn && !isStreamTarget(target)) {
    const rest = await Promise.allSettled(Array.from({ length: want - 1 }, () => open(target, opts)));
    for (const r of rest) if (r.status === 'fulfilled') conns.push(r.value);
    const failed = rest.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.allSettled(conns.map((c) => c.disconnect()));
      throw failed.reason;
    }
  }
  return new MultiConnection(conns);
}
