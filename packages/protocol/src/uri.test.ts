// NBD URIs per doc/uri.md of the NBD project, plus libnbd's vsock and tls-* extensions.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { formatNbdUri, type NbdUri, NbdUriError, parseNbdUri } from './uri.js';

describe("parseNbdUri: the spec's export-name table", () => {
  test.each([
    ['nbd://example.com/disk', 'disk'],
    ['nbd+unix:///disk?socket=sock', 'disk'],
    ['nbd://example.com/', ''],
    ['nbd://example.com', ''],
    ['nbd://example.com//disk', '/disk'],
    ['nbd://example.com/hello%20world', 'hello world'],
    ['nbd://example.com/%E2%82%AC%3F%23', '€?#'],
  ])('%s → %j', (uri, name) => {
    expect(parseNbdUri(uri).exportName).toBe(name);
  });
});

describe('parseNbdUri', () => {
  test('nbd:// with host and port', () => {
    expect(parseNbdUri('nbd://example.com:10810/disk')).toEqual({
      transport: 'tcp',
      tls: false,
      host: 'example.com',
      port: 10810,
      exportName: 'disk',
      params: {},
    });
  });

  test('no port: left undefined, the caller uses 10809', () => {
    expect(parseNbdUri('nbd://example.com/').port).toBeUndefined();
    expect(parseNbdUri('nbd://example.com:/').port).toBeUndefined();
  });

  test('no host: localhost', () => {
    expect(parseNbdUri('nbd:///disk').host).toBe('localhost');
  });

  test('nbds:// requires TLS; tls-* parameters and userinfo', () => {
    expect(parseNbdUri('nbds://alice@example.com/disk?tls-type=psk&tls-psk-file=/etc/keys.psk&tls-verify-peer=0&tls-hostname=srv')).toEqual(
      {
        transport: 'tcp',
        tls: true,
        host: 'example.com',
        user: 'alice',
        exportName: 'disk',
        params: { 'tls-type': 'psk', 'tls-psk-file': '/etc/keys.psk', 'tls-verify-peer': '0', 'tls-hostname': 'srv' },
      },
    );
    expect(parseNbdUri('nbds://h/?tls-certificates=/etc/pki/nbd').params).toEqual({ 'tls-certificates': '/etc/pki/nbd' });
  });

  test('percent-encoded userinfo', () => {
    expect(parseNbdUri('nbds://al%40ice@h/').user).toBe('al@ice');
  });

  test('IPv6 hosts, with and without a port', () => {
    expect(parseNbdUri('nbd://[::1]/x')).toMatchObject({ host: '::1', exportName: 'x' });
    expect(parseNbdUri('nbd://[2001:db8::7]:10811/')).toMatchObject({ host: '2001:db8::7', port: 10811 });
    expect(parseNbdUri('nbd://[fe80::1%25eth0]:1/')).toMatchObject({ host: 'fe80::1%eth0', port: 1 });
  });

  test('IPv4 host', () => {
    expect(parseNbdUri('nbd://192.0.2.1:10809')).toMatchObject({ host: '192.0.2.1', port: 10809, exportName: '' });
  });

  test('nbd+unix:// with socket=', () => {
    expect(parseNbdUri('nbd+unix:///disk?socket=/run/nbd.sock')).toEqual({
      transport: 'unix',
      tls: false,
      socket: '/run/nbd.sock',
      exportName: 'disk',
      params: {},
    });
    expect(parseNbdUri('nbd+unix://?socket=nbd.sock')).toMatchObject({ socket: 'nbd.sock', exportName: '' });
  });

  test('nbd+unix:// abstract socket (%00)', () => {
    expect(parseNbdUri('nbd+unix:///?socket=%00/abstract').socket).toBe('\0/abstract');
  });

  test('nbds+unix:// with tls-hostname', () => {
    expect(parseNbdUri('nbds+unix:///x?socket=s&tls-hostname=server.example')).toEqual({
      transport: 'unix',
      tls: true,
      socket: 's',
      exportName: 'x',
      params: { 'tls-hostname': 'server.example' },
    });
  });

  test('nbd+vsock:// and nbds+vsock://', () => {
    expect(parseNbdUri('nbd+vsock://2:10809/disk')).toEqual({
      transport: 'vsock',
      tls: false,
      host: '2',
      port: 10809,
      exportName: 'disk',
      params: {},
    });
    expect(parseNbdUri('nbds+vsock://3')).toMatchObject({ transport: 'vsock', tls: true, host: '3', exportName: '' });
  });

  test('unknown and experimental parameters are kept for the caller to diagnose', () => {
    expect(parseNbdUri('nbd://h/?x-foo=1&bar').params).toEqual({ 'x-foo': '1', bar: '' });
  });

  test('the scheme is case-insensitive and a fragment is ignored', () => {
    expect(parseNbdUri('NBD+UNIX:///d?socket=s#frag')).toMatchObject({ transport: 'unix', exportName: 'd', socket: 's' });
  });

  test.each([
    ['http://example.com/', /unknown scheme/],
    ['nbd:example.com', /not an NBD URI/],
    ['not a uri', /not an NBD URI/],
    ['nbd+unix:///disk', /socket=/],
    ['nbd+unix:///disk?socket=', /socket=/],
    ['nbd+unix://host/disk?socket=s', /no host/],
    ['nbd://h/?socket=/s', /only valid/],
    ['nbd+vsock:///', /CID/],
    ['nbd://h:99999/', /bad port/],
    ['nbd://h:1x/', /bad port/],
    ['nbd://[bad', /bad host/],
    ['nbd://[::1/x', /bad host/],
    ['nbd://a]b:10809/', /bad host/],
    ['nbd://h/%E2%82', /percent-encoding/],
    ['nbd://h/?a=%zz', /percent-encoding/],
    [`nbd://h/${'x'.repeat(4097)}`, /4096/],
  ])('%s is refused', (uri, message) => {
    expect(() => parseNbdUri(uri)).toThrow(NbdUriError);
    expect(() => parseNbdUri(uri)).toThrow(message);
  });
});

describe('formatNbdUri', () => {
  test.each<[NbdUri, string]>([
    [{ transport: 'tcp', tls: false, host: 'example.com', exportName: 'disk', params: {} }, 'nbd://example.com/disk'],
    [{ transport: 'tcp', tls: false, host: 'example.com', exportName: '', params: {} }, 'nbd://example.com/'],
    [{ transport: 'tcp', tls: false, host: 'h', exportName: '/disk', params: {} }, 'nbd://h//disk'],
    [{ transport: 'tcp', tls: false, host: 'h', exportName: 'hello world', params: {} }, 'nbd://h/hello%20world'],
    [
      { transport: 'tcp', tls: true, host: '::1', port: 10810, user: 'alice', exportName: 'x', params: { 'tls-type': 'psk' } },
      'nbds://alice@[::1]:10810/x?tls-type=psk',
    ],
    [{ transport: 'unix', tls: false, socket: '/run/nbd.sock', exportName: 'disk', params: {} }, 'nbd+unix:///disk?socket=/run/nbd.sock'],
    [{ transport: 'unix', tls: false, socket: '\0/abstract', exportName: '', params: {} }, 'nbd+unix:///?socket=%00/abstract'],
    [
      { transport: 'unix', tls: true, socket: 's', exportName: '', params: { 'tls-hostname': 'srv' } },
      'nbds+unix:///?socket=s&tls-hostname=srv',
    ],
    [{ transport: 'vsock', tls: false, host: '2', port: 10809, exportName: 'd', params: {} }, 'nbd+vsock://2:10809/d'],
    [{ transport: 'tcp', tls: false, host: 'fe80::1%eth0', exportName: '', params: {} }, 'nbd://[fe80::1%25eth0]/'],
    [
      { transport: 'unix', tls: false, socket: '/tmp/a;b=c&d+e f', exportName: 'x&y', params: { 'tls-psk-file': '/k/p?q' } },
      'nbd+unix:///x&y?socket=/tmp/a%3Bb%3Dc%26d%2Be%20f&tls-psk-file=/k/p%3Fq',
    ],
  ])('%j', (uri, text) => {
    expect(formatNbdUri(uri)).toBe(text);
    expect(parseNbdUri(text)).toEqual(uri);
  });
});

describe('round trips (fast-check)', () => {
  const name = fc.string({ unit: 'grapheme', maxLength: 20 });
  const key = fc.stringMatching(/^[a-z][a-z0-9-]{0,11}$/).filter((k) => k !== 'socket');
  const params = fc.dictionary(key, fc.string({ unit: 'grapheme', maxLength: 10 }), { maxKeys: 3 });
  const port = fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined });
  const user = fc.option(fc.string({ unit: 'grapheme', maxLength: 8 }), { nil: undefined });
  const strip = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

  const tcp = fc.record({
    transport: fc.constant('tcp' as const),
    tls: fc.boolean(),
    host: fc.oneof(fc.domain(), fc.ipV4(), fc.ipV6()),
    port,
    user,
    exportName: name,
    params,
  });
  const unix = fc.record({
    transport: fc.constant('unix' as const),
    tls: fc.boolean(),
    socket: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }),
    exportName: name,
    params,
  });
  const vsock = fc.record({
    transport: fc.constant('vsock' as const),
    tls: fc.boolean(),
    host: fc.nat({ max: 0xffffffff }).map(String),
    port,
    exportName: name,
    params,
  });

  test('parseNbdUri(formatNbdUri(u)) is u', () => {
    fc.assert(
      fc.property(fc.oneof(tcp, unix, vsock), (u) => {
        const uri = strip(u) as NbdUri;
        expect(parseNbdUri(formatNbdUri(uri))).toEqual(uri);
      }),
      { numRuns: 500 },
    );
  });

  test('formatNbdUri(parseNbdUri(s)) is stable after one pass', () => {
    fc.assert(
      fc.property(fc.oneof(tcp, unix, vsock), (u) => {
        const once = formatNbdUri(parseNbdUri(formatNbdUri(strip(u) as NbdUri)));
        expect(formatNbdUri(parseNbdUri(once))).toBe(once);
      }),
      { numRuns: 200 },
    );
  });

  test('arbitrary text either parses or is an NbdUriError', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.webUrl().map((u) => u.replace(/^https?/, 'nbd')),
        ),
        (s) => {
          try {
            parseNbdUri(s);
          } catch (e) {
            if (!(e instanceof NbdUriError)) throw e;
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
