// TLS credentials for interop tests, made fresh with GnuTLS's certtool and psktool
// (gnutls-bin), in the layout nbdkit, qemu, libnbd and nbd-server all read:
// ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, client-key.pem, keys.psk.
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runOk } from './peers.js';

export interface Credentials {
  /** ca-cert.pem, server-*.pem, client-*.pem and keys.psk (user "alice"). */
  dir: string;
  /** The same CA, with a server certificate for another host name (tls-hostname checks). */
  wrongHost: string;
  /** The same names under a different CA (an untrusted chain). */
  otherCa: string;
  /** A server certificate that expired yesterday. */
  expired: string;
  /** keys.psk with alice's key changed (a wrong key). */
  wrongKey: string;
}

async function key(path: string): Promise<void> {
  await runOk('certtool', ['--generate-privkey', '--key-type=rsa', '--bits=2048', '--outfile', path]);
}

/** certtool's template for one certificate. */
function template(dir: string, name: string, lines: string[]): string {
  const path = join(dir, `${name}.info`);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

async function ca(dir: string, cn: string): Promise<void> {
  await key(join(dir, 'ca-key.pem'));
  const t = template(dir, 'ca', [`cn = ${cn}`, 'ca', 'cert_signing_key', 'expiration_days = 30']);
  await runOk('certtool', [
    '--generate-self-signed',
    '--load-privkey',
    join(dir, 'ca-key.pem'),
    '--template',
    t,
    '--outfile',
    join(dir, 'ca-cert.pem'),
  ]);
}

async function signed(dir: string, role: 'server' | 'client', lines: string[]): Promise<void> {
  await key(join(dir, `${role}-key.pem`));
  const t = template(dir, role, lines);
  await runOk('certtool', [
    '--generate-certificate',
    '--load-privkey',
    join(dir, `${role}-key.pem`),
    '--load-ca-certificate',
    join(dir, 'ca-cert.pem'),
    '--load-ca-privkey',
    join(dir, 'ca-key.pem'),
    '--template',
    t,
    '--outfile',
    join(dir, `${role}-cert.pem`),
  ]);
}

const serverCert = (host: string, days = 30) => [
  'organization = NBD test',
  `cn = ${host}`,
  `dns_name = ${host}`,
  'ip_address = 127.0.0.1',
  'tls_www_server',
  'encryption_key',
  'signing_key',
  `expiration_days = ${days}`,
];
const clientCert = [
  'organization = NBD test',
  'cn = test-client',
  'tls_www_client',
  'encryption_key',
  'signing_key',
  'expiration_days = 30',
];

async function psk(dir: string): Promise<void> {
  await runOk('psktool', ['-u', 'alice', '-p', join(dir, 'keys.psk')]);
}

/** Makes every set of credentials under `root` (subdirectories). */
export async function makeCredentials(root: string): Promise<Credentials> {
  const mk = async (name: string) => {
    const d = join(root, name);
    mkdirSync(d, { recursive: true });
    return d;
  };
  const copyCa = (to: string) => {
    for (const f of ['ca-cert.pem', 'ca-key.pem']) copyFileSync(join(dir, f), join(to, f));
  };
  const dir = await mk('good');
  await ca(dir, 'NBD test CA');
  await signed(dir, 'server', serverCert('localhost'));
  await signed(dir, 'client', clientCert);
  await psk(dir);

  const wrongHost = await mk('wrong-host');
  copyCa(wrongHost);
  await signed(wrongHost, 'server', serverCert('not-this-host.example'));

  const otherCa = await mk('other-ca');
  await ca(otherCa, 'Another CA');
  await signed(otherCa, 'server', serverCert('localhost'));
  await signed(otherCa, 'client', clientCert);

  const expired = await mk('expired');
  copyCa(expired);
  // certtool cannot back-date; a certificate valid for "-1" days is already past its end.
  await key(join(expired, 'server-key.pem'));
  const t = template(expired, 'server', [
    ...serverCert('localhost', 1).slice(0, -1),
    'activation_date = "2020-01-01 00:00:00 UTC"',
    'expiration_date = "2020-02-01 00:00:00 UTC"',
  ]);
  await runOk('certtool', [
    '--generate-certificate',
    '--load-privkey',
    join(expired, 'server-key.pem'),
    '--load-ca-certificate',
    join(expired, 'ca-cert.pem'),
    '--load-ca-privkey',
    join(expired, 'ca-key.pem'),
    '--template',
    t,
    '--outfile',
    join(expired, 'server-cert.pem'),
  ]);

  const wrongKey = await mk('wrong-key');
  writeFileSync(join(wrongKey, 'keys.psk'), `alice:${'ab'.repeat(32)}\n`);
  return { dir, wrongHost, otherCa, expired, wrongKey };
}
