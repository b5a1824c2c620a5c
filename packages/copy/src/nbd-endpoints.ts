// NBD exports as copy endpoints. A source asks for base:allocation, but a server
// that cannot give it (no structured replies: nbd-server, `nbdkit --no-sr`; oldstyle:
// `nbdkit -o`, `nbd serve -o`) is copied without a map, every block read, as
// nbdcopy does: all-zero blocks are still found by reading them.

import { Client, type Connection, type ConnectTarget, connectMulti, type ExportHandle, MultiConnection } from '@nbd/client';
import { AllocationState, MetaContext, NbdInvalidArgumentError, NbdUnsupportedError } from '@nbd/protocol';
import type { EndpointOptions, Sink, Source } from './ends.js';

/** Opens one connection; when the server cannot negotiate `contexts`, enters without them on the same connection. */
async function openOne(target: ConnectTarget, contexts: string[], opts: EndpointOptions): Promise<Connection> {
  const client = await Client.connect(target, { signal: opts.signal, tls: opts.tls });
  try {
    if (contexts.length > 0) {
      try {
        return await client.go(client.defaultExport, { metaContexts: contexts, signal: opts.signal });
      } catch (e) {
        // Refused before anything was sent for the export: the client is still negotiating.
        if (!(e instanceof NbdUnsupportedError) || client.state !== 'negotiating') throw e;
      }
    }
    return await client.go(client.defaultExport, { signal: opts.signal });
  } catch (e) {
    await client.abort().catch(() => {});
    throw e;
  }
}

/** A stream was given (one connection only), not an address that can be dialled again. */
function isStream(t: ConnectTarget): boolean {
  return typeof t === 'object' && t !== null && !(t instanceof URL) && typeof (t as { on?: unknown }).on === 'function';
}

/**
 * Up to `opts.connections` connections to `target` (more than one only with
 * CAN_MULTI_CONN), the map asked for on each when the first one got it.
 */
export async function connectForCopy(target: ConnectTarget, opts: EndpointOptions, map: boolean): Promise<MultiConnection> {
  const first = await openOne(target, map ? [MetaContext.BASE_ALLOCATION] : [], opts);
  const want = opts.connections ?? 4;
  if (want <= 1 || !first.info.can.multiConn || isStream(target)) return new MultiConnection([first]);
  try {
    const contexts = first.metaContexts.has(MetaContext.BASE_ALLOCATION) ? [MetaContext.BASE_ALLOCATION] : [];
    const rest = await connectMulti(target, { connections: want - 1, metaContexts: contexts, signal: opts.signal, tls: opts.tls });
    return new MultiConnection([first, ...rest.connections]);
  } catch (e) {
    await first.disconnect().catch(() => {});
    throw e;
  }
}

/** An NBD export read from; `owned`: opened by the copy (disconnected at the end). */
export function nbdSource(conn: ExportHandle, owned: boolean, map: boolean): Source {
  const hasMap = map && conn.metaContexts.has(MetaContext.BASE_ALLOCATION);
  return {
    size: conn.info.size,
    connections: conn.connectionCount,
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

/** An NBD export written to; `owned`: opened by the copy. */
export function nbdSink(conn: ExportHandle, owned: boolean, opts: EndpointOptions, name: string): Sink {
  if (conn.info.is.readOnly || !conn.info.can.write) {
    throw new NbdInvalidArgumentError(`copy: the destination ${name} is read-only`);
  }
  let zeroes: Uint8Array | undefined;
  return {
    size: conn.info.size,
    connections: conn.connectionCount,
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
