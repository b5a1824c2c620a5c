// Every ServeOptions field means the same on one thread and on worker threads: each
// is placed by optionScopes, and a worker gets every per-connection field there is.
import { describe, expect, it } from 'vitest';
import { silentLogger } from './logger.js';
import { MemoryDevice } from './memory-device.js';
import { connectionData, connectionHooks, connectionOptions, optionScopes, type ServeOptions } from './serve-options.js';
import { SharedMemoryDevice } from './shared-memory-device.js';
import { workerSetup } from './threads.js';

// Required<>: a field added to ServeOptions fails to compile here until it is given a value.
const every: Required<ServeOptions> = {
  signal: new AbortController().signal,
  maxConnections: 5,
  maxConnectionsPerClient: 4,
  handshakeTimeout: 1234,
  preconnect: () => true,
  tls: { mode: 'on', pskFile: '/nonexistent/keys.psk', verifyPeer: false },
  open: () => new MemoryDevice(1),
  logger: silentLogger,
  maxPayload: 4096,
  maxInFlight: 7,
  maxInFlightBytes: 8192,
  keepAlive: 0,
  readOnly: true,
  handshake: 'oldstyle',
  threads: 2,
  onListen: () => {},
};
const keysOf = (scope: string) =>
  Object.entries(optionScopes)
    .filter(([, s]) => s === scope)
    .map(([k]) => k)
    .sort();

describe('optionScopes', () => {
  it('places every ServeOptions field, and nothing else', () => {
    expect(Object.keys(optionScopes).sort()).toEqual(Object.keys(every).sort());
  });

  it('connectionData and connectionHooks take exactly their fields', () => {
    expect(Object.keys(connectionData(every)).sort()).toEqual(keysOf('data'));
    expect(Object.keys(connectionHooks(every)).sort()).toEqual(keysOf('hook'));
    expect(Object.keys(connectionData({}))).toEqual([]);
  });

  it('a connection on this thread gets every data and hook field, with its signal and logger', () => {
    const o = connectionOptions(connectionData(every), connectionHooks(every), every.signal, silentLogger);
    for (const key of [...keysOf('data'), ...keysOf('hook')]) expect(o[key as keyof typeof o], key).toBe(every[key as keyof ServeOptions]);
  });

  it('a worker gets a clone of every data field and a flag for every hook; nothing of the listener', () => {
    const exports = [{ name: 'a', description: 'd', size: 4096, device: new SharedMemoryDevice(4096), readOnly: true, tlsOnly: true }];
    const setup = structuredClone(workerSetup(exports, every, { preconnect: true, open: true }));
    expect(setup.data).toEqual(connectionData(every));
    expect(Object.keys(setup.data).sort()).toEqual(keysOf('data'));
    expect(setup.hooks).toEqual({ preconnect: true, open: true });
    const { recipe, ...rest } = setup.exports[0]!;
    expect(rest).toEqual({ name: 'a', description: 'd', size: 4096, readOnly: true, tlsOnly: true });
    expect(typeof recipe.module).toBe('string');
  });
});
