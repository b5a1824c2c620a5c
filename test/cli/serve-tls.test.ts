// `nbd serve`'s listen forms against its TLS options, driven as a user would: every
// form (-p/-i, -U, -U -, --listen with each scheme) under each TLS choice, checked with
// libnbd's nbdinfo in plaintext and over TLS (issue 19: `--listen nbds://…` served
// plaintext). Then hostile plaintext clients against an `nbds+unix://` listener.
import { join } from 'node:path';
import { OptionReply } from '@nbd/protocol';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { finalType, handshake, option } from '../hostile/support.js';
import { type Peer, startServer, tempDir } from '../support/peers.js';
import { scoped } from '../support/scoped.js';
import { type Credentials, makeCredentials } from '../support/tls.js';
import { NBD_BIN, nbd } from './support.js';

const s = scoped('nbd-cli-serve-tls-');
const credsDir = tempDir('nbd-cli-serve-tls-creds-');
let creds: Credentials;
beforeAll(async () => {
  creds = await makeCredentials(credsDir.dir);
}, 60_000);
afterAll(() => credsDir.cleanup());

/** What a run of the matrix gives: a usage error, or which clients read the export. */
type Outcome = 'usage error' | { plaintext: boolean; tls: boolean };

// --run's command tries a plaintext client, then a TLS (PSK) one, on the first listener.
const probe = (psk: string) =>
  [
    'if [ -n "$port" ]; then plain="nbd://127.0.0.1:$port/"; tls="nbds://alice@127.0.0.1:$port/?tls-psk-file=$PSK";',
    'else plain="nbd+unix:///?socket=$unixsocket"; tls="nbds+unix://alice@/?socket=$unixsocket&tls-psk-file=$PSK"; fi;',
    'nbdinfo --size "$plain" >/dev/null 2>&1; echo "plaintext=$?";',
    'nbdinfo --size "$tls" >/dev/null 2>&1; echo "tls=$?"',
  ]
    .join(' ')
    .replaceAll('$PSK', psk);

async function outcome(listen: string[], tls: string[], psk: string): Promise<Outcome> {
  const r = await nbd(['serve', ...listen, ...tls, 'memory', '1M', '--run', probe(psk)], { timeout: 30_000 });
  if (r.code === 2 && /nbd serve: /.test(r.stderr)) return 'usage error';
  expect(r.code, r.stderr).toBe(0);
  return { plaintext: /plaintext=0/.test(r.stdout), tls: /tls=0/.test(r.stdout) };
}

describe('nbd serve: every listen form against the TLS options', () => {
  test('an nbds… listener is never plaintext: without credentials, or with --tls=on/off, a usage error; with them TLS is required', async () => {
    const psk = join(creds.dir, 'keys.psk');
    const dir = s.tmp();
    const forms: [string, string[], boolean][] = [
      ['-p/-i', ['-p', '0', '-i', '127.0.0.1'], false],
      ['-U PATH', ['-U', join(dir, 'u.sock')], false],
      ['-U -', ['-U', '-'], false],
      ['--listen nbd://', ['--listen', 'nbd://127.0.0.1:0'], false],
      ['--listen nbd+unix://', ['--listen', `nbd+unix:///?socket=${join(dir, 'l.sock')}`], false],
      ['--listen nbds://', ['--listen', 'nbds://127.0.0.1:0'], true],
      ['--listen NBDS:// (any case)', ['--listen', 'NBDS://127.0.0.1:0'], true],
      ['--listen nbds+unix://', ['--listen', `nbds+unix:///?socket=${join(dir, 's.sock')}`], true],
    ];
    const choices: [string, string[]][] = [
      ['no TLS options', []],
      ['--tls-psk', ['--tls-psk', psk]],
      ['--tls=require --tls-psk', ['--tls=require', '--tls-psk', psk]],
      ['--tls=on --tls-psk', ['--tls=on', '--tls-psk', psk]],
      ['--tls=off --tls-psk', ['--tls=off', '--tls-psk', psk]],
    ];
    const expected = (nbds: boolean, choice: string): Outcome => {
      if (choice === 'no TLS options') return nbds ? 'usage error' : { plaintext: true, tls: false };
      if (choice === '--tls=on --tls-psk') return nbds ? 'usage error' : { plaintext: true, tls: true };
      if (choice === '--tls=off --tls-psk') return nbds ? 'usage error' : { plaintext: true, tls: false };
      return { plaintext: false, tls: true }; // credentials (and require): TLS only, whatever the form
    };
    const got: Record<string, Outcome> = {};
    const want: Record<string, Outcome> = {};
    for (const [form, listen, nbds] of forms)
      for (const [choice, tls] of choices) {
        got[`${form} + ${choice}`] = await outcome(listen, tls, psk);
        want[`${form} + ${choice}`] = expected(nbds, choice);
      }
    expect(got).toEqual(want);
  }, 120_000);

  test('the usage errors name what is missing, and the issue-19 command line no longer serves plaintext', async () => {
    const cases: [string[], RegExp][] = [
      [['--listen', 'nbds://127.0.0.1:0'], /--listen nbds:\/\/127\.0\.0\.1:0 requires TLS: give --tls-certificates DIR or --tls-psk FILE/],
      [['--listen', 'nbds+unix:///?socket=/tmp/x', '--tls=on', '--tls-psk', 'k'], /requires TLS, but --tls=on lets plaintext clients in/],
      [['--listen', 'nbds://127.0.0.1:0', '--tls=off', '--tls-certificates', 'd'], /requires TLS, but --tls=off serves plaintext/],
      [['-p', '0', '--listen', 'nbds://127.0.0.1:0'], /requires TLS: give --tls-certificates/],
      [['--listen', 'nbd+vsock://3'], /vsock address: Node\.js has no vsock sockets/],
      [['--listen', 'nbds://127.0.0.1:0/?tls-certificates=/etc'], /has tls-certificates: a listener takes only \?socket=/],
      [['--listen', 'nbds://alice@127.0.0.1:0'], /has a user name/],
      [['--listen', 'nbd://127.0.0.1:0/disk'], /names an export: name exports with -e NAME/],
      [['--listen', 'http://x'], /'http:\/\/x' is not an nbd\[s\]:\/\/ or nbd\[s\]\+unix:\/\/ URI/],
    ];
    for (const [args, message] of cases) {
      // Old code served these; --run ends the server so a regression fails instead of hanging.
      const r = await nbd(['serve', ...args, 'memory', '1M', '--run', 'nbdinfo --size "$uri"'], { timeout: 20_000 });
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    }
  });
});

describe('hostile plaintext clients against `nbd serve --listen nbds+unix://… --tls-psk`', () => {
  // Each row: what the client sends in plaintext, what the spec requires of a server
  // that requires TLS, and what we do.
  const rows: [string, string, string, (socket: string) => Promise<void>][] = [
    [
      'NBD_OPT_EXPORT_NAME ""',
      'it cannot be refused with an error reply, so the server must not enter transmission',
      'closes the connection',
      async (socket) => {
        const c = await handshake(socket);
        c.write(new Uint8Array([...new TextEncoder().encode('IHAVEOPT'), 0, 0, 0, 1, 0, 0, 0, 0]));
        expect(await c.frame()).toBeNull();
      },
    ],
    [
      'NBD_OPT_GO "" then NBD_OPT_INFO ""',
      'NBD_REP_ERR_TLS_REQD',
      'NBD_REP_ERR_TLS_REQD, twice',
      async (socket) => {
        const c = await handshake(socket);
        expect(finalType(await option(c, { kind: 'go', name: '', requests: [] }))).toBe(OptionReply.ERR_TLS_REQD >>> 0);
        expect(finalType(await option(c, { kind: 'info', name: '', requests: [] }))).toBe(OptionReply.ERR_TLS_REQD >>> 0);
        c.close();
      },
    ],
    [
      'NBD_OPT_LIST',
      'NBD_REP_ERR_TLS_REQD (the export list is not shown in plaintext)',
      'NBD_REP_ERR_TLS_REQD',
      async (socket) => {
        const c = await handshake(socket);
        expect(finalType(await option(c, { kind: 'list' }))).toBe(OptionReply.ERR_TLS_REQD >>> 0);
        c.close();
      },
    ],
    [
      'NBD_OPT_STARTTLS, then a plaintext NBD_OPT_GO instead of a TLS ClientHello',
      'the TLS handshake fails',
      'closes the connection without an option reply',
      async (socket) => {
        const c = await handshake(socket);
        expect(finalType(await option(c, { kind: 'starttls' }))).toBe(OptionReply.ACK);
        c.write(new Uint8Array([...new TextEncoder().encode('IHAVEOPT'), 0, 0, 0, 7, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0]));
        expect(await c.waitClosed()).toBe(true);
      },
    ],
  ];

  let server: Peer;
  beforeAll(async () => {
    const args = ['serve', '--listen', 'nbds+unix:///?socket={SOCK}', '--tls-psk', join(creds.dir, 'keys.psk'), 'memory', '1M'];
    server = await startServer(process.execPath, [NBD_BIN, ...args]);
  });
  afterAll(() => server?.stop());

  test.each(rows)('%s: the spec says %s; we do: %s', async (_sent, _spec, _we, row) => {
    await row(server.socket);
  });
});
