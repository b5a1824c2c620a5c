// The hostile-input table, part 3: the security-relevant ServeOptions (preconnect, open,
// the TLS modes, tlsOnly, limits, read-only), driven by hostile peers, on one thread and
// on worker threads (`threads: 2`): every row runs in both modes, and must give the same
// answer in both (issue 19: on workers, preconnect was not run again after TLS, so a PSK
// user it refuses got read-write access). Each row: what the peer sends, what the spec
// requires or allows, what we do; after each row the server lives and serves a bystander.

import { open } from '@nbd/client';
import { Command, decodeOptionReply, Errno, encodeRequest, Info, Option, OptionReply, type ServerFrame } from '@nbd/protocol';
import type { ConnectionInfo } from '@nbd/server';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { tempDir } from '../support/peers.js';
import { finalType, type HostileCase, handshake, MiB, option, RawClient, rawOption, ServerChild, serverTable } from './support.js';
import { type PskUser, TlsRawClient, writePskFile } from './tls-support.js';

const tmp = tempDir('nbd-hostile-options-');
const psk = writePskFile(tmp.dir);
afterAll(() => tmp.cleanup());

const tlsAs = (srv: ServerChild, user: PskUser) => TlsRawClient.start(srv.socket, user, psk.keys.get(user)!);
const write = (offset: number, data: Uint8Array, cookie = 1n) =>
  Buffer.concat([encodeRequest({ type: Command.WRITE, flags: 0, cookie, offset: BigInt(offset), length: BigInt(data.length) }), data]);
const read = (offset: number, length: number, cookie = 2n) =>
  encodeRequest({ type: Command.READ, flags: 0, cookie, offset: BigInt(offset), length: BigInt(length) });
const utf8 = (s: string) => new TextEncoder().encode(s);

/** GO over TLS, into transmission (simple replies); returns the GO replies. */
async function goTls(c: TlsRawClient, name: string, requests: number[] = []) {
  const rs = await c.option({ kind: 'go', name, requests });
  expect(finalType(rs)).toBe(OptionReply.ACK);
  c.decoder.startTransmission(false);
  return rs!;
}

/** `length` bytes at `offset` of "mem", read by a plaintext client. */
async function memAt(srv: ServerChild, offset: number, length: number): Promise<Uint8Array> {
  await using conn = await open({ path: srv.socket }, { exportName: 'mem', handshakeTimeout: 5000 });
  return conn.read(offset, length);
}

/** The data of a successful READ's simple reply (as a Buffer, to compare), or the frame itself. */
function bytesOf(f: ServerFrame | null): Buffer | ServerFrame | null {
  return f?.kind === 'simple-reply' && f.error === 0 && f.data ? Buffer.from(f.data) : f;
}

/** Every ConnectionInfo the server child's preconnect was called with, in order. */
async function preconnects(srv: ServerChild): Promise<ConnectionInfo[]> {
  return JSON.parse(await srv.ask('preconnects')) as ConnectionInfo[];
}

/** The final reply of a plaintext option: its type and message. */
async function refusal(srv: ServerChild, req: Parameters<typeof option>[1], structured = false) {
  const c = await handshake(srv.socket);
  if (structured) expect(finalType(await option(c, { kind: 'structured-reply' }))).toBe(OptionReply.ACK);
  const rs = await option(c, req);
  c.close();
  const last = rs!.at(-1)! as { type: number; data: Uint8Array };
  const r = decodeOptionReply(last.type, last.data);
  return r.kind === 'error' ? { code: r.code, message: r.message } : { code: last.type };
}

/** Waits until the server serves no connection (rows before may still be winding down). */
async function quiet(srv: ServerChild): Promise<void> {
  for (let i = 0; i < 100 && (await srv.connections()) > 0; i++) await new Promise((r) => setTimeout(r, 30));
  expect(await srv.connections()).toBe(0);
}

/** SELECTIVETLS (exports mem, ro, secret: tlsOnly); preconnect refuses mallory after 200 ms, open refuses eve. */
const selective = (threads: number) => ({
  threads,
  tls: { mode: 'on', pskFile: psk.path },
  maxPayload: MiB,
  maxConnections: 12,
  hooks: { preconnectRefuses: 'mallory', preconnectDelayMs: 200, openRefuses: 'eve' },
});

function selectiveRows(srv: () => ServerChild): HostileCase<void>[] {
  return [
    {
      sends: 'STARTTLS as PSK user mallory (whom preconnect refuses once TLS is up), then GO "mem" and a WRITE',
      spec: 'a server may close a client it does not authorize; the README: preconnect runs again after TLS, with the identity',
      we: 'closed',
      run: async () => {
        const before = (await preconnects(srv())).length;
        const c = await tlsAs(srv(), 'mallory');
        const rs = await c.option({ kind: 'go', name: 'mem', requests: [] }).catch(() => null);
        if (rs !== null) c.write(write(7 * MiB, new Uint8Array(4096).fill(0x66)));
        expect(rs).toBeNull();
        expect(await c.waitClosed()).toBe(true);
        // Called twice for this client: before the greeting, and once TLS was up, with who it is.
        const [first, second, ...rest] = (await preconnects(srv())).slice(before);
        expect([first?.tls, second?.tls?.psk, rest]).toEqual([undefined, 'mallory', []]);
        expect(second?.address).toBe(first?.address);
        expect((await memAt(srv(), 7 * MiB, 4096)).every((b) => b === 0)).toBe(true);
      },
    },
    {
      sends: 'STARTTLS as PSK user eve (whom the open hook refuses), then GO "mem"',
      spec: 'a server may refuse an export with an error reply; the option loop goes on',
      we: 'option error',
      run: async () => {
        const c = await tlsAs(srv(), 'eve');
        expect(finalType(await c.option({ kind: 'go', name: 'mem', requests: [] }))).toBe(OptionReply.ERR_UNKNOWN);
        expect(finalType(await c.option({ kind: 'list' }))).toBe(OptionReply.ACK);
        c.close();
      },
    },
    {
      sends: 'STARTTLS as alice, GO "secret" (TLS-only) asking NBD_INFO_BLOCK_SIZE, a 4 KiB WRITE and a READ of it',
      spec: 'over TLS a TLS-only export is served; the block size states the maximum payload',
      we: 'accepted',
      run: async () => {
        const c = await tlsAs(srv(), 'alice');
        const rs = await goTls(c, 'secret', [Info.BLOCK_SIZE]);
        const infos = rs.map((f) => (f.kind === 'option-reply' ? decodeOptionReply(f.type, f.data) : undefined));
        expect(infos).toContainEqual({ kind: 'info', info: { kind: 'block-size', min: 1, preferred: 4096, max: MiB } });
        const data = new Uint8Array(4096).fill(0x42);
        c.write(write(8192, data));
        expect(await c.frame()).toMatchObject({ kind: 'simple-reply', error: 0 });
        c.decoder.readLength = () => 4096;
        c.write(read(8192, 4096));
        expect(bytesOf(await c.frame())).toEqual(Buffer.from(data));
        c.close();
        expect((await preconnects(srv())).at(-1)!.tls?.psk).toBe('alice');
      },
    },
    {
      sends: 'as alice over TLS, a WRITE of 1 MiB + 4 KiB (over maxPayload: 1 MiB), all of it sent',
      spec: 'a payload over the advertised maximum: the server may reply EINVAL (after reading it) or close',
      we: 'errno reply',
      run: async () => {
        const c = await tlsAs(srv(), 'alice');
        await goTls(c, 'mem');
        c.write(write(0, new Uint8Array(MiB + 4096)));
        expect(await c.frame()).toMatchObject({ kind: 'simple-reply', error: Errno.EINVAL });
        c.close();
      },
    },
    {
      sends: 'in plaintext, GO for "secret" (TLS-only)',
      spec: 'SELECTIVETLS: the server MUST reply NBD_REP_ERR_TLS_REQD for a TLS-only export',
      we: 'option error',
      run: async () => expect((await refusal(srv(), { kind: 'go', name: 'secret', requests: [] })).code).toBe(OptionReply.ERR_TLS_REQD),
    },
    {
      sends: 'in plaintext, INFO for "nosuch" (no such export) and for "secret" (TLS-only)',
      spec: 'SELECTIVETLS MAY answer ERR_TLS_REQD for a non-existent export, "so that clients … cannot enumerate exports"',
      we: 'option error',
      run: async () => {
        const secret = await refusal(srv(), { kind: 'info', name: 'secret', requests: [] });
        const nosuch = await refusal(srv(), { kind: 'info', name: 'nosuch', requests: [] });
        expect(secret.code).toBe(OptionReply.ERR_TLS_REQD);
        expect({ ...nosuch, message: nosuch.message?.replace('nosuch', 'secret') }).toEqual(secret);
      },
    },
    {
      sends: 'in plaintext, NBD_OPT_LIST',
      spec: 'SELECTIVETLS MAY omit TLS-only exports from LIST',
      we: 'accepted',
      run: async () => {
        const c = await handshake(srv().socket);
        const rs = (await option(c, { kind: 'list' }))!;
        c.close();
        const names = rs.flatMap((f) => {
          const r = f.kind === 'option-reply' ? decodeOptionReply(f.type, f.data) : undefined;
          return r?.kind === 'server' ? [r.name] : [];
        });
        expect(names).toContain('mem');
        expect(names).not.toContain('secret');
      },
    },
    ...(['list-meta-context', 'set-meta-context'] as const).map(
      (kind): HostileCase<void> => ({
        sends: `in plaintext, ${kind === 'list-meta-context' ? 'LIST' : 'SET'}_META_CONTEXT for "secret" (TLS-only) and for "nosuch"`,
        spec: 'ERR_TLS_REQD only for INFO, GO and EXPORT_NAME ("MUST NOT … in response to any option other than"); an unavailable export: ERR_UNKNOWN',
        we: 'option error',
        run: async () => {
          const req = (name: string) => ({ kind, name, queries: ['base:allocation'] });
          const secret = await refusal(srv(), req('secret'), true);
          const nosuch = await refusal(srv(), req('nosuch'), true);
          expect(secret).toEqual({ code: OptionReply.ERR_UNKNOWN, message: 'unknown export "secret"' });
          expect({ ...nosuch, message: nosuch.message?.replace('nosuch', 'secret') }).toEqual(secret);
        },
      }),
    ),
    {
      sends: 'in plaintext, EXPORT_NAME "secret" (TLS-only)',
      spec: 'SELECTIVETLS: EXPORT_NAME cannot error, so the server MUST terminate the session',
      we: 'closed',
      run: async () => {
        const c = await handshake(srv().socket);
        c.write(rawOption(Option.EXPORT_NAME, utf8('secret')));
        expect(await c.waitClosed()).toBe(true);
      },
    },
    {
      sends: 'STARTTLS as alice, the TLS handshake, then gone before preconnect (200 ms) has answered',
      spec: 'a client may disconnect at any time; the server cleans up',
      we: 'closed',
      run: async () => {
        const c = await tlsAs(srv(), 'alice');
        await new Promise((r) => setTimeout(r, 50)); // the server has finished its side of the TLS handshake
        c.close();
        await new Promise((r) => setTimeout(r, 400)); // preconnect answers into a closed connection
        expect(srv().alive).toBe(true);
      },
    },
    {
      sends: 'in plaintext, a WRITE to the read-only export "ro"',
      spec: 'a write to a read-only export: the server MUST reply EPERM',
      we: 'errno reply',
      run: async () => {
        const c = await handshake(srv().socket);
        expect(finalType(await option(c, { kind: 'go', name: 'ro', requests: [] }))).toBe(OptionReply.ACK);
        c.decoder.startTransmission(false);
        c.write(write(0, new Uint8Array(512)));
        expect(await c.frame()).toMatchObject({ kind: 'simple-reply', error: Errno.EPERM });
        c.close();
      },
    },
    {
      sends: 'maxConnections (12) idle connections, then one more',
      spec: 'no limit in the spec; a server may refuse connections beyond what it serves',
      we: 'closed',
      run: async () => {
        await quiet(srv());
        const idle = await Promise.all(Array.from({ length: 12 }, () => RawClient.connect(srv().socket)));
        for (const c of idle) expect((await c.frame())?.kind).toBe('greeting');
        const extra = await RawClient.connect(srv().socket);
        expect(await extra.frame()).toBeNull(); // closed before the greeting
        for (const c of idle) c.close();
        await quiet(srv());
      },
    },
    {
      sends: 'nothing at all after connecting',
      spec: 'the spec sets no limit; the server bounds the handshake (handshakeTimeout: 1.5 s)',
      we: 'closed',
      run: async () => {
        const c = await RawClient.connect(srv().socket);
        const t0 = Date.now();
        expect(await c.waitClosed(6000)).toBe(true);
        expect(Date.now() - t0).toBeGreaterThanOrEqual(1200);
      },
    },
  ];
}

/** FORCEDTLS, every export read-only; preconnect refuses mallory once TLS is up. */
const forced = (threads: number) => ({
  threads,
  tls: { mode: 'require', pskFile: psk.path },
  readOnly: true,
  hooks: { preconnectRefuses: 'mallory' },
});

/** Alice over TLS reads back the pattern the server child wrote at the start of "mem". */
async function aliceReads(socket: string): Promise<void> {
  const c = await TlsRawClient.start(socket, 'alice', psk.keys.get('alice')!);
  await goTls(c, 'mem');
  c.decoder.readLength = () => 4096;
  c.write(read(0, 4096));
  expect(bytesOf(await c.frame())).toEqual(Buffer.alloc(4096, 0x5a));
  c.close();
}

function forcedRows(srv: () => ServerChild): HostileCase<void>[] {
  return [
    {
      sends: 'in plaintext, LIST, GO "mem", STRUCTURED_REPLY and an unknown option 0x77',
      spec: 'FORCEDTLS: every option but STARTTLS and ABORT MUST get ERR_TLS_REQD, unsupported ones included',
      we: 'option error',
      run: async () => {
        const c = await handshake(srv().socket);
        const reqs: Parameters<typeof option>[1][] = [
          { kind: 'list' },
          { kind: 'go', name: 'mem', requests: [] },
          { kind: 'structured-reply' },
        ];
        for (const req of reqs) {
          expect(finalType(await option(c, req))).toBe(OptionReply.ERR_TLS_REQD);
        }
        c.write(rawOption(0x77, new Uint8Array(0)));
        expect(finalType(await option(c, { kind: 'list' }))).toBe(OptionReply.ERR_TLS_REQD);
        c.close();
      },
    },
    {
      sends: 'in plaintext, EXPORT_NAME "mem"',
      spec: 'FORCEDTLS: EXPORT_NAME before TLS cannot error, so the server MUST terminate the session',
      we: 'closed',
      run: async () => {
        const c = await handshake(srv().socket);
        c.write(rawOption(Option.EXPORT_NAME, utf8('mem')));
        expect(await c.waitClosed()).toBe(true);
      },
    },
    {
      sends: 'STARTTLS as mallory (refused by preconnect once TLS is up), then GO "mem" (nbds://mallory@…, issue 19)',
      spec: 'a server may close a client it does not authorize; the README promises preconnect runs again after TLS',
      we: 'closed',
      run: async () => {
        const c = await tlsAs(srv(), 'mallory');
        expect(await c.option({ kind: 'go', name: 'mem', requests: [] }).catch(() => null)).toBeNull();
      },
    },
    {
      sends: 'STARTTLS as alice, GO "mem" on a server with readOnly, then a WRITE',
      spec: 'the export is advertised READ_ONLY; a write to it MUST get EPERM',
      we: 'errno reply',
      run: async () => {
        const c = await tlsAs(srv(), 'alice');
        const rs = await goTls(c, 'mem');
        const info = rs
          .map((f) => (f.kind === 'option-reply' ? decodeOptionReply(f.type, f.data) : undefined))
          .find((r) => r?.kind === 'info');
        expect(info?.kind === 'info' && info.info.kind === 'export' && (info.info.flags & 2) !== 0).toBe(true); // READ_ONLY
        c.write(write(0, new Uint8Array(4096)));
        expect(await c.frame()).toMatchObject({ kind: 'simple-reply', error: Errno.EPERM });
        c.close();
      },
    },
    {
      sends: 'STARTTLS as alice, then STARTTLS again over TLS',
      spec: 'a second STARTTLS MUST get ERR_INVALID',
      we: 'option error',
      run: async () => {
        const c = await tlsAs(srv(), 'alice');
        expect(finalType(await c.option({ kind: 'starttls' }))).toBe(OptionReply.ERR_INVALID);
        c.close();
      },
    },
  ];
}

for (const threads of [0, 2]) {
  describe(`threads: ${threads}`, () => {
    let sel: ServerChild;
    let frc: ServerChild;
    beforeAll(async () => {
      [sel, frc] = await Promise.all([ServerChild.start(selective(threads)), ServerChild.start(forced(threads))]);
    }, 30_000);
    afterAll(async () => {
      await Promise.all([sel?.stop(), frc?.stop()]);
    });
    serverTable(
      `security options vs our server: SELECTIVETLS (threads: ${threads})`,
      selectiveRows(() => sel),
      () => sel,
    );
    serverTable(
      `security options vs our server: FORCEDTLS, read-only (threads: ${threads})`,
      forcedRows(() => frc),
      () => frc,
      0,
      aliceReads,
    );
  });
}
