import { describe, expect, test } from 'vitest';
import { Duplex } from 'node:stream';
import { NbdOptionError, NbdStateError, NbdTimeoutError, NbdUnsupportedError, Option, OptionReply } from '@nbd/protocol';
import { scopedFakeServers } from '../test/fake-server.js';
import { Client } from './client.js';

const serve = scopedFakeServers();

describe('Client: handshake', () => {
  test('list, info, listMetaContexts, then go; afterwards the client is finished', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ exports: ['a', 'b'], contexts: { 'base:allocation': 1, 'qemu:dirty-bitmap:x': 2 }, blockSize: { min: 1, preferred: 4096, max: 1 << 20 } });
    });
    const c = await Client.connect(srv.uri);
    expect(c.style).toBe('fixed-newstyle');
    expect(await c.list()).toEqual([
      { name: 'a', description: 'export a' },
      { name: 'b', description: 'export b' },
    ]);
    const info = await c.info('b');
    expect(info).toMatchObject({ name: 'b', size: 1 << 20, can: { write: true, trim: true, flush: true, multiConn: false }, blockSizes: { max: 1 << 20 } });
    expect(await c.listMetaContexts('b', ['base:allocation'])).toEqual(['base:allocation']);
    const conn = await c.go('b', { metaContexts: ['base:allocation'] });
    expect([...conn.metaContexts]).toEqual([['base:allocation', 1]]);
    await expect(c.list()).rejects.toBeInstanceOf(NbdStateError);
    await expect(c.go('a')).rejects.toThrow(/handshake is over/);
  });

  test('an option error is an NbdOptionError with the server message; the client stays usable', async () => {
    const srv = await serve(async (p) => {
      await p.negotiate({ exports: ['disk'] });
    });
    const c = await Client.connect(srv.uri);
    const err = await c.go('nope').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdOptionError);
    expect(err).toMatchObject({ option: Option.GO, reply: OptionReply.ERR_UNKNOWN, replyName: 'ERR_UNKNOWN', code: 'NBD_ERR_OPTION_REFUSED', serverMessage: 'no export named "nope"' });
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

  test('nbds:// is refused clearly; a bad greeting is a ProtocolError', async () => {
    await expect(Client.connect('nbds://localhost/x')).rejects.toThrow(/TLS is not supported/);
    await expect(Client.connect('nbds+unix:///?socket=/x')).rejects.toBeInstanceOf(NbdUnsupportedError);
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
