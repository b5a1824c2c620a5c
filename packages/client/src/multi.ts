// Several connections to one export, used as one: requests go to the least
// loaded connection; flush goes to all. Only when the server advertises
// CAN_MULTI_CONN (otherwise caches need not be coherent across connections).
import type { Duplex } from 'node:stream';
import { Client, type ConnectOptions, type GoOptions } from './client.js';
import type { Connection, Extent } from './connection.js';
import type { ExportInfo } from './export-info.js';

type Signal = { signal?: AbortSignal };

/** Connects to `target` and enters transmission on its export (the URI's, or `exportName`). */
export async function open(target: string | Duplex, opts: GoOptions & ConnectOptions & { exportName?: string } = {}): Promise<Connection> {
  const client = await Client.connect(target, opts);
  try {
    return await client.go(opts.exportName ?? client.defaultExport, opts);
  } catch (e) {
    await client.abort().catch(() => {});
    throw e;
  }
}

export class MultiConnection {
  constructor(readonly connections: readonly Connection[]) {
    if (connections.length === 0) throw new Error('MultiConnection needs at least one connection');
  }

  get info(): ExportInfo {
    return this.connections[0]!.info;
  }

  get metaContexts(): ReadonlyMap<string, number> {
    return this.connections[0]!.metaContexts;
  }

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

  read(offset: number, length: number, opts?: Signal): Promise<Uint8Array> {
    return this.pick().read(offset, length, opts);
  }
  /** @internal See Connection.readLent. */
  readLent(offset: number, length: number, opts?: Signal): Promise<{ data: Uint8Array; release: () => void }> {
    return this.pick().readLent(offset, length, opts);
  }
  readInto(buf: Uint8Array, offset: number, opts?: Signal): Promise<void> {
    return this.pick().readInto(buf, offset, opts);
  }
  write(buf: Uint8Array, offset: number, opts?: { fua?: boolean } & Signal): Promise<void> {
    return this.pick().write(buf, offset, opts);
  }
  trim(offset: number, length: number, opts?: { fua?: boolean } & Signal): Promise<void> {
    return this.pick().trim(offset, length, opts);
  }
  zero(offset: number, length: number, opts?: { noHole?: boolean; fast?: boolean; fua?: boolean } & Signal): Promise<void> {
    return this.pick().zero(offset, length, opts);
  }
  cache(offset: number, length: number, opts?: Signal): Promise<void> {
    return this.pick().cache(offset, length, opts);
  }
  blockStatus(offset: number, length: number, opts?: { contexts?: string[]; reqOne?: boolean } & Signal): Promise<Map<string, Extent[]>> {
    return this.pick().blockStatus(offset, length, opts);
  }

  /**
   * Flushes every connection. With CAN_MULTI_CONN one flush covers writes completed on any
   * connection, but flushing all also covers servers whose caches are per connection.
   */
  async flush(opts?: Signal): Promise<void> {
    await Promise.all(this.connections.map((c) => c.flush(opts)));
  }

  async disconnect(opts?: Signal): Promise<void> {
    const results = await Promise.allSettled(this.connections.map((c) => c.disconnect(opts)));
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }
}

/**
 * Opens up to `connections` connections to `uri` (default 4): as many as asked when the
 * server advertises CAN_MULTI_CONN, else just one.
 */
export async function connectMulti(
  uri: string,
  opts: GoOptions & ConnectOptions & { connections?: number; exportName?: string } = {},
): Promise<MultiConnection> {
  const want = opts.connections ?? 4;
  if (!Number.isInteger(want) || want < 1) throw new RangeError(`connections must be a positive integer, got ${want}`);
  const first = await open(uri, opts);
  const conns = [first];
  if (want > 1 && first.info.can.multiConn) {
    const rest = await Promise.allSettled(Array.from({ length: want - 1 }, () => open(uri, opts)));
    for (const r of rest) if (r.status === 'fulfilled') conns.push(r.value);
    const failed = rest.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.allSettled(conns.map((c) => c.disconnect()));
      throw failed.reason;
    }
  }
  return new MultiConnection(conns);
}
