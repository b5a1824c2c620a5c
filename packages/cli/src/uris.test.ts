import { parseNbdUri } from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { parseUserUri, uriForExport } from './uris.js';

describe('uriForExport (the uri nbd info prints)', () => {
  test('an IPv6 link-local address keeps its zone id, escaped as RFC 6874 says, and parses back', () => {
    const typed = parseUserUri('info', 'nbd://[fe80::1%25eth0]/disk');
    const printed = uriForExport(typed, 'other');
    expect(printed).toBe('nbd://[fe80::1%25eth0]:10809/other');
    expect(parseNbdUri(printed)).toEqual({
      transport: 'tcp',
      tls: false,
      host: 'fe80::1%eth0',
      port: 10809,
      exportName: 'other',
      params: {},
    });
  });

  test("as libnbd writes it: the socket's slashes as they are, TLS files kept, a vsock URI stays vsock", () => {
    const unix = parseUserUri('info', 'nbds+unix:///a?socket=/run/nbd.sock&tls-psk-file=/etc/k.psk&tls-verify-peer=false');
    expect(uriForExport(unix, 'b')).toBe('nbds+unix:///b?socket=/run/nbd.sock&tls-psk-file=/etc/k.psk');
    expect(uriForExport(parseUserUri('info', 'nbd+vsock://3:10810/x'), '')).toBe('nbd+vsock://3:10810/');
  });
});
