import { Duplex } from 'node:stream';
import { NbdSystemError, NodeTransport } from '@nbd/node';
import {
  NbdAbortError,
  NbdInvalidArgumentError,
  NbdOptionError,
  NbdStateError,
  NbdTimeoutError,
  NbdUnsupportedError,
  Option,
  OptionReply,
} from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { scopedFakeServers } from '../test/fake-server.js';
import { Client } from './client.js';
import { DEFAULT_HANDSHAKE_TIMEOUT } from './client-options.js';

const serve = scopedFakeServers();

describe('Client: handshake', () => {
  test('list, info, listMetaContexts, then go; afterwards the client is finished', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({
        exports: ['a', 'b'],
        contexts: { 'base:allocation': 1, 'qemu:dirty-bitmap:x': 2 },
        blockSize: { min: 1, preferred: 4096, max: 1 << 20 },
      });
    });
    const c = await Client.connect(srv.uri);
    expect(c.style).toBe('fixed-newstyle');
    expect(await c.list()).toEqual([
      { name: 'a', description: 'export a' },
      { name: 'b', description: 'export b' },
    ]);
    const info = await c.info('b');
    expect(info).toMatchObject({
      name: 'b',
      size: 1 << 20,
      can: { write: true, trim: true, flush: true, multiConn: false },
      blockSizes: { max: 1 << 20 },
    });
    expect(await c.listMetaContexts('b', ['base:allocation'])).toEqual(['base:allocation']);
    const conn = await c.go('b', { metaContexts: ['base:allocation'] });
    expect([...conn.metaContexts]).toEqual([['base:allocation', 1]]);
    await expect(c.list()).rejects.toBeInstanceOf(NbdStateError);
    await expect(c.go('a')).rejects.toThrow(/handshake is over/);
  });

  test('structuredReplies tells whether structured replies are negotiated yet (listMetaContexts asks for them)', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ exports: ['a'], contexts: { 'base:allocation': 1 } });
    });
    const c = await Client.connect(srv.uri);
    expect(c.structuredReplies).toBe(false);
    await c.info('a');
    expect(c.structuredReplies).toBe(false);
    expect(await c.listMetaContexts('a')).toEqual(['base:allocation']);
    expect(c.structuredReplies).toBe(true);
    const conn = await c.go('a');
    expect(conn.structuredReplies).toBe(true);
    await conn.disconnect();
  });

  test('an option error is an NbdOptionError with the server message; the client stays usable', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ exports: ['disk'] });
    });
    const c = await Client.connect(srv.uri);
    const err = await c.go('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdOptionError);
    expect(err).toMatchObject({
      option: Option.GO,
      reply: OptionReply.ERR_UNKNOWN,
      replyName: 'ERR_UNKNOWN',
      code: 'NBD_ERR_OPTION_REFUSED',
      serverMessage: 'no export named "nope"',
    });
    const conn = await c.go('disk');
    expect(conn.info.name).toBe('disk');
  });

  test('GO refused with ERR_UNSUP falls back to EXPORT_NAME', async () => {
    let chosen = '';
    const srv = await serve(async (p) => {
      chosen = await p.negotiate({ noGo: true });
    });
    const c = await Client.connect(srv.uri);
    const conn = await c.go('legacy');
    await srv.done;
    expect(chosen).toBe('legacy');
    expect(conn.info.size).toBe(1 << 20);
  });

  test('options go one at a time: a concurrent call is a state error', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
    });
    const c = await Client.connect(srv.uri);
    const first = c.list();
    await expect(c.info()).rejects.toThrow(/another option is in progress/);
    await first;
  });

  test('abort() sends NBD_OPT_ABORT and closes', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
    });
    const c = await Client.connect(srv.uri);
    await c.abort();
    await srv.done;
    await expect(c.list()).rejects.toThrow(/closed/);
  });

  test('nbds:// to a server answering STARTTLS with an error fails (no downgrade); tls allow goes on in plaintext', async () => {
    const refusing = await serve(async (p) => {
      await p.negotiate({});
    });
    const err = await Client.connect(refusing.uri.replace('nbd+unix:', 'nbds+unix:')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdUnsupportedError);
    expect((err as Error).message).toMatch(/TLS is required, but the server answered STARTTLS with ERR_UNSUP/);
    expect((err as Error).cause).toMatchObject({ option: Option.STARTTLS, reply: OptionReply.ERR_UNSUP });
    const plain = await serve(async (p) => {
      await p.negotiate({});
    });
    const client = await Client.connect(plain.uri, { tls: { mode: 'allow', psk: { alice: 'ab'.repeat(32) } } });
    expect(client.tls).toBeUndefined();
    const conn = await client.go();
    expect(conn.tls).toBeUndefined();
  });

  test('a bad greeting is a ProtocolError', async () => {
    const srv = await serve(async (p) => {
      p.send(new Uint8Array(18).fill(1));
    });
    await expect(Client.connect(srv.uri)).rejects.toThrow(/not an NBD server/);
  });

  test('a handshake timeout rejects and closes the socket', async () => {
    const srv = await serve(async () => {}); // accepts, never greets
    const t0 = Date.now();
    await expect(Client.connect(srv.uri, { handshakeTimeout: 100 })).rejects.toBeInstanceOf(NbdTimeoutError);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  test('accepts an already-connected Duplex', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate();
    });
    const { connect } = await import('node:net');
    const sock = connect({ path: decodeURIComponent(srv.uri.split('socket=')[1]!) });
    await new Promise((r) => sock.once('connect', r));
    expect(sock).toBeInstanceOf(Duplex);
    const c = await Client.connect(sock);
    const conn = await c.go('');
    expect(conn.info.size).toBe(1 << 20);
    await conn.disconnect();
  });
});

describe('Client: targets', () => {
  test('an NBD URI string, a URL, { path }, { host, port } (TCP), and a Transport all connect', async () => {
    const unix = await serve(async (p) => {
      await p.negotiate({ exports: ['disk'] });
    });
    const tcp = await serve(
      async (p) => {
        await p.negotiate({ exports: ['disk'] });
      },
      { tcp: true },
    );
    const viaUrl = await Client.connect(new URL(tcp.uri.replace(/\/$/, '/disk')));
    expect(viaUrl.defaultExport).toBe('disk');
    expect((await viaUrl.go()).info.name).toBe('disk');
    const viaPath = await Client.connect(unix.address);
    expect(viaPath.defaultExport).toBe('');
    expect((await viaPath.go('disk')).info.size).toBe(1 << 20);
    const viaHostPort = await Client.connect(tcp.address);
    expect((await viaHostPort.go('disk')).info.size).toBe(1 << 20);
    const { connect } = await import('node:net');
    const sock = connect((unix.address as { path: string }).path);
    await new Promise((r) => sock.once('connect', r));
    const viaTransport = await Client.connect(new NodeTransport(sock));
    expect((await viaTransport.go('disk')).info.size).toBe(1 << 20);
  });

  test('a failed connect names the host and the default port (not "undefined") when the URI has none', async () => {
    const err = await Client.connect('nbd://nonexistent.invalid/', { handshakeTimeout: 10_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdSystemError);
    expect((err as Error).message).toMatch(/^cannot connect to nonexistent\.invalid:10809: /);
  });

  test('a stream that is closed already is refused at once', async () => {
    const { PassThrough } = await import('node:stream');
    const dead = new PassThrough();
    dead.destroy();
    await expect(Client.connect(dead)).rejects.toMatchObject({ code: 'NBD_ERR_CLOSED' });
  });

  test('what is not a target, names vsock, or has bad TLS parameters is refused before connecting', async () => {
    await expect(Client.connect(42 as never)).rejects.toBeInstanceOf(NbdInvalidArgumentError);
    await expect(Client.connect('http://example.com/')).rejects.toBeInstanceOf(NbdInvalidArgumentError);
    await expect(Client.connect(new URL('nbds+vsock://1/x'))).rejects.toBeInstanceOf(NbdUnsupportedError);
    await expect(Client.connect('nbds://localhost/x?tls-type=bogus')).rejects.toThrow(/tls-type=bogus: expected psk or x509/);
    await expect(Client.connect('nbds://localhost/x?tls-verify-peer=maybe')).rejects.toBeInstanceOf(NbdInvalidArgumentError);
    await expect(Client.connect('nbd+vsock://1')).rejects.toBeInstanceOf(NbdUnsupportedError);
    for (const bad of [
      { maxOptionReplies: 0 },
      { maxOptionReplies: 1.5 },
      { maxOptionReplyBytes: -1 },
      { maxOptionReplyBytes: Number.NaN },
    ])
      await expect(Client.connect({ path: '/nonexistent/nbd.sock' }, bad)).rejects.toThrow(/must be a whole number ≥ 1 \(or Infinity\)/);
  });

  test('a refused connection is an NbdSystemError that keeps the OS error as its cause', async () => {
    const err = await Client.connect({ path: '/nonexistent/nbd.sock' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdSystemError);
    expect(err).toMatchObject({ errnoName: 'ENOENT', cause: { code: 'ENOENT' } });
  });
});

describe('Client: limits, aborts, refusals', () => {
  test('the handshake limit covers every option, not only the greeting (default 30 s)', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ silentOn: 'go' });
    });
    const c = await Client.connect(srv.uri, { handshakeTimeout: 150 });
    expect(c.handshakeTimeout).toBe(150);
    expect(await c.list()).toEqual([{ name: '', description: 'export ' }]); // answered options are fine
    const t0 = Date.now();
    const err = await c.go('').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdTimeoutError);
    expect((err as Error).message).toMatch(/go: no answer from the server within 150 ms \(handshakeTimeout\)/);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(c.state).toBe('closed');
    await expect(c.list()).rejects.toThrow(/closed.*handshakeTimeout/);
    const d = await Client.connect(srv.uri);
    expect(d.handshakeTimeout).toBe(DEFAULT_HANDSHAKE_TIMEOUT);
    expect(DEFAULT_HANDSHAKE_TIMEOUT).toBe(30_000);
    await d.abort();
  });

  test('an aborted option rejects with NbdAbortError (cause: the reason) and closes the client; aborted before: nothing sent', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ silentOn: 'info' });
    });
    const c = await Client.connect(srv.uri);
    await expect(c.list({ signal: AbortSignal.abort(new Error('not now')) })).rejects.toMatchObject({
      code: 'NBD_ERR_ABORTED',
      cause: new Error('not now'),
    });
    expect(c.state).toBe('negotiating'); // nothing was sent
    const ac = new AbortController();
    const info = c.info('', { signal: ac.signal });
    setTimeout(() => ac.abort(new Error('too slow')), 30);
    const err = await info.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdAbortError);
    expect((err as NbdAbortError).cause).toEqual(new Error('too slow'));
    expect(c.state).toBe('closed');
  });

  test('EXPORT_NAME: a server closing is a refusal (with the close as cause); an abort stays an abort', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ plainNewstyle: true, exports: ['disk'] });
    });
    const c = await Client.connect(srv.uri);
    expect(c.style).toBe('newstyle');
    const err = await c.go('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdOptionError);
    expect(err).toMatchObject({ option: Option.EXPORT_NAME, cause: { code: 'NBD_ERR_CLOSED' } });
    expect((err as Error).message).toMatch(/refuses the export "nope"/);

    const stalled = await serve(async (p) => {
      await p.negotiate({ plainNewstyle: true, silentOn: 'export-name' });
    });
    const d = await Client.connect(stalled.uri);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stop')), 30);
    const aborted = await d.go('x', { signal: ac.signal }).catch((e: unknown) => e);
    expect(aborted).toBeInstanceOf(NbdAbortError);
    expect(aborted).toMatchObject({ cause: new Error('stop') });
  });

  test('await using: a Client left negotiating sends NBD_OPT_ABORT; a Connection disconnects', async () => {
    let sawAbort = false;
    let sawDisc = false;
    const srv = await serve(async (p) => {
      const chosen = await p.negotiate();
      sawAbort = chosen === '' && p.closed === false;
      const d = await p.request().catch(() => undefined);
      sawDisc = d?.type === 2;
    });
    {
      await using client = await Client.connect(srv.uri);
      expect(client.state).toBe('negotiating');
    }
    await srv.done;
    expect(sawAbort).toBe(true);
    let state = '';
    {
      await using conn = await (await Client.connect(srv.uri)).go();
      state = conn.state;
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(state).toBe('transmitting');
    expect(sawDisc).toBe(true);
  });
});
