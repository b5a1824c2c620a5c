// Where `nbd serve` listens (TCP, a unix socket, or a private socket in a fresh
// directory as nbdkit's `-U -`), and the URIs clients use to reach it.
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatNbdUri } from '@nbd/protocol';
import { type Export, listen, type NbdServer, type ServeOptions } from '@nbd/server';
import type { ListenSpec } from './serve-spec.js';

/** One listener, running. */
export interface Listener {
  server: NbdServer;
  /** The URI of `exportName` on this listener (nbds… when TLS is required). */
  uriOf(exportName: string): string;
  /** nbdkit's `$port` and `$unixsocket` for this listener. */
  port: string;
  unixsocket: string;
  /** Closes the server and removes a private socket's directory. */
  close(): Promise<void>;
}

async function startOne(spec: ListenSpec, exports: readonly Export[], opts: ServeOptions, tls: boolean): Promise<Listener> {
  let dir: string | undefined;
  let address: { path: string } | { host?: string; port: number };
  if (spec.kind === 'private') {
    dir = await mkdtemp(join(tmpdir(), 'nbd-serve-'));
    address = { path: join(dir, 'socket') };
  } else if (spec.kind === 'unix') address = { path: spec.path };
  else address = spec.host !== undefined ? { host: spec.host, port: spec.port } : { port: spec.port };
  let server: NbdServer;
  try {
    server = await listen(address, exports, opts);
  } catch (e) {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    throw e;
  }
  const close = async () => {
    await server.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  };
  if ('path' in address) {
    const path = address.path;
    return {
      server,
      port: '',
      unixsocket: path,
      close,
      uriOf: (exportName) => formatNbdUri({ transport: 'unix', tls, socket: path, exportName, params: {} }),
    };
  }
  const where = server.address as AddressInfo;
  const host = spec.kind === 'tcp' && spec.host !== undefined && spec.host !== '0.0.0.0' && spec.host !== '::' ? spec.host : 'localhost';
  return {
    server,
    port: String(where.port),
    unixsocket: '',
    close,
    uriOf: (exportName) => formatNbdUri({ transport: 'tcp', tls, host, port: where.port, exportName, params: {} }),
  };
}

/** Starts every listener; if one fails, those already started are closed. */
export async function startListeners(
  specs: readonly ListenSpec[],
  exports: readonly Export[],
  opts: ServeOptions,
  tls: boolean,
): Promise<Listener[]> {
  const started: Listener[] = [];
  try {
    for (const s of specs) started.push(await startOne(s, exports, opts, tls));
  } catch (e) {
    await Promise.allSettled(started.map((l) => l.close()));
    throw e;
  }
  return started;
}
