// TLS for STARTTLS: credentials in nbdkit's and libnbd's layouts (a certificates
// directory, a PSK file of `username:hexkey` lines as psktool writes them, or values
// given in code), turned into what node:tls takes, and the upgrade of a plain socket.
// PSK takes precedence over X.509, as in nbdkit. Under TLS 1.2 PSK needs PSK cipher
// suites named explicitly; under TLS 1.3 the PSK identity hint is not sent.
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import tls, { type ConnectionOptions, type TLSSocket, type TlsOptions } from 'node:tls';
import { NbdInvalidArgumentError, NbdTimeoutError, ProtocolError } from '@nbd/protocol';

/** PEM text or bytes. */
export type Pem = string | Uint8Array;

/** Credentials common to both sides. */
interface TlsCredentials {
  /**
   * A directory in nbdkit's / libnbd's layout: `ca-cert.pem`, and `server-cert.pem` +
   * `server-key.pem` (server) or `client-cert.pem` + `client-key.pem` (client), and
   * an optional `ca-crl.pem`.
   */
  certificates?: string;
  /** PEM values, instead of or on top of `certificates`. */
  ca?: Pem;
  cert?: Pem;
  key?: Pem;
  crl?: Pem;
  /** A PSK file: `username:hexkey` lines (psktool's format). */
  pskFile?: string;
  /** PSK keys given in code: username → key (bytes, or hex text). */
  psk?: Record<string, Uint8Array | string>;
}

/** A server's TLS settings (ServeOptions.tls). */
export interface ServerTlsOptions extends TlsCredentials {
  /**
   * 'off': STARTTLS is refused (NOTLS). 'on': TLS is offered; exports marked `tlsOnly`
   * need it (SELECTIVETLS). 'require': every option but STARTTLS and ABORT needs it
   * (FORCEDTLS). Default 'require'.
   */
  mode?: 'off' | 'on' | 'require';
  /** Ask for and check client certificates against the CA (X.509 only). */
  verifyPeer?: boolean;
}

/** A client's TLS settings. */
export interface ClientTlsOptions extends TlsCredentials {
  /** 'off': plaintext. 'allow': TLS if the server offers it. 'require': TLS or fail (default). */
  mode?: 'off' | 'allow' | 'require';
  /** The PSK identity to use (the URI's user name). */
  username?: string;
  /** The name the server certificate must carry (default: the host connected to). */
  hostname?: string;
  /** Check the server's certificate chain and name (default true; X.509 only). */
  verifyPeer?: boolean;
}

/** Who the peer authenticated as. */
export interface TlsIdentity {
  /** The PSK username the client used. */
  psk?: string;
  /** The client certificate's subject, as `CN=…,O=…`. */
  subject?: string;
  /** The negotiated TLS version (`TLSv1.3`, `TLSv1.2`), for logs. */
  protocol: string;
  /** The negotiated cipher suite's standard (IANA) name, e.g. `TLS_AES_256_GCM_SHA384`, for logs. */
  cipher: string;
}

/** TLS 1.2 PSK suites (GnuTLS peers offer these); TLS 1.3 uses its own suites with PSK. */
const PSK_CIPHERS =
  'PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:ECDHE-PSK-CHACHA20-POLY1305';

/** Parses a PSK file: `username:hexkey` per line; blank lines and `#` comments are skipped. */
export function parsePskFile(text: string, where = 'PSK file'): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.lastIndexOf(':');
    const user = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^(?:[0-9a-fA-F]{2})+$/.test(hex)) throw new NbdInvalidArgumentError(`${where}:${i + 1}: expected username:hexkey`);
    keys.set(user, Buffer.from(hex, 'hex'));
  }
  if (keys.size === 0) throw new NbdInvalidArgumentError(`${where}: no keys`);
  return keys;
}

async function pskKeys(o: TlsCredentials): Promise<Map<string, Buffer> | undefined> {
  const keys = o.pskFile ? parsePskFile(await readFile(o.pskFile, 'utf8'), o.pskFile) : new Map<string, Buffer>();
  for (const [user, k] of Object.entries(o.psk ?? {})) keys.set(user, typeof k === 'string' ? Buffer.from(k, 'hex') : Buffer.from(k));
  return keys.size > 0 ? keys : undefined;
}

async function fileIfAny(dir: string | undefined, name: string): Promise<Buffer | undefined> {
  if (dir === undefined) return undefined;
  try {
    return await readFile(join(dir, name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

const pem = (p: Pem | undefined) => (p === undefined ? undefined : typeof p === 'string' ? p : Buffer.from(p));

/** The X.509 material of one side, from the directory and the values. */
async function x509(o: TlsCredentials, role: 'server' | 'client') {
  const dir = o.certificates;
  return {
    ca: pem(o.ca) ?? (await fileIfAny(dir, 'ca-cert.pem')),
    cert: pem(o.cert) ?? (await fileIfAny(dir, `${role}-cert.pem`)),
    key: pem(o.key) ?? (await fileIfAny(dir, `${role}-key.pem`)),
    crl: pem(o.crl) ?? (await fileIfAny(dir, 'ca-crl.pem')),
  };
}

/** A server's credentials, loaded once and shared by its connections. */
export interface ServerTls {
  /** 'off' refuses STARTTLS (NOTLS), 'on' offers it (SELECTIVETLS), 'require' demands it (FORCEDTLS); see ServerTlsOptions.mode. */
  mode: 'off' | 'on' | 'require';
  /** Upgrades a plain socket after STARTTLS was acknowledged. */
  accept(socket: Socket, timeoutMs: number): Promise<{ socket: TLSSocket; identity: TlsIdentity }>;
}

/** Loads a server's TLS credentials (files read now, once). */
export async function serverTls(o: ServerTlsOptions): Promise<ServerTls> {
  const mode = o.mode ?? 'require';
  const keys = await pskKeys(o);
  const verify = o.verifyPeer === true;
  let base: TlsOptions;
  if (keys) {
    // PSK overrides X.509 (nbdkit): no certificate at all.
    base = { ciphers: `${tls.DEFAULT_CIPHERS}:${PSK_CIPHERS}` };
  } else {
    const m = await x509(o, 'server');
    if (mode !== 'off' && (m.cert === undefined || m.key === undefined)) {
      const dir = o.certificates;
      if (dir === undefined)
        throw new NbdInvalidArgumentError('TLS: a server needs a certificate and key (server-cert.pem, server-key.pem) or PSK keys');
      const missing = [m.cert === undefined && 'server-cert.pem', m.key === undefined && 'server-key.pem'].filter(Boolean).join(' and ');
      throw new NbdInvalidArgumentError(`TLS: ${dir} has no ${missing} (a server needs its certificate and key there)`);
    }
    if (verify && m.ca === undefined) throw new NbdInvalidArgumentError('TLS: verifyPeer needs a CA (ca-cert.pem)');
    // Checked now, so bad PEM fails at start-up, not at the first client.
    tls.createSecureContext({ ca: m.ca, cert: m.cert, key: m.key, crl: m.crl });
    base = { ca: m.ca, cert: m.cert, key: m.key, crl: m.crl, requestCert: verify, rejectUnauthorized: verify };
  }
  return {
    mode,
    accept: (socket, timeoutMs) => accept(socket, timeoutMs, base, keys, verify),
  };
}

/**
 * The server's TLS handshake on an accepted plain socket: injected into a tls.Server of
 * its own (the documented way to hand it a connection), which checks client
 * certificates and refuses unauthorized ones as a listening TLS server would.
 */
function accept(
  socket: Socket,
  timeoutMs: number,
  base: TlsOptions,
  keys: Map<string, Buffer> | undefined,
  verify: boolean,
): Promise<{ socket: TLSSocket; identity: TlsIdentity }> {
  const { promise, resolve, reject } = Promise.withResolvers<{ socket: TLSSocket; identity: TlsIdentity }>();
  let user: string | undefined;
  const options: TlsOptions = { ...base, minVersion: 'TLSv1.2' };
  if (keys) {
    options.pskCallback = (_s, identity) => {
      user = identity;
      return keys.get(identity) ?? null;
    };
  }
  const server = tls.createServer(options);
  const timer = setTimeout(() => fail(new NbdTimeoutError(`TLS handshake did not finish within ${timeoutMs} ms`)), timeoutMs);
  timer.unref();
  function fail(e: Error, why?: string): void {
    clearTimeout(timer);
    socket.destroy();
    const psk = keys && { user, known: user !== undefined && keys.has(user) };
    reject(e instanceof NbdTimeoutError ? e : new ProtocolError(why ?? serverRefusal(e, psk), { cause: e }));
  }
  // A refused certificate destroys the TLS socket without another event: the plain one closes.
  const closed = () =>
    fail(
      new Error('closed'),
      verify
        ? 'refused TLS: the client sent no certificate, or one our CA (ca-cert.pem) did not sign'
        : 'the client closed the connection during the TLS handshake',
    );
  socket.once('close', closed);
  server.once('tlsClientError', (e: Error) => fail(e));
  server.once('secureConnection', (s: TLSSocket) => {
    clearTimeout(timer);
    socket.off('close', closed);
    resolve({ socket: s, identity: identityOf(s, keys ? user : undefined, true) });
  });
  server.emit('connection', socket);
  return promise;
}

/** Upgrades a plain client socket after the server acknowledged STARTTLS. */
export async function clientTls(
  socket: Socket,
  o: ClientTlsOptions,
  host: string | undefined,
  timeoutMs: number,
): Promise<{ socket: TLSSocket; identity: TlsIdentity }> {
  const keys = await pskKeys(o);
  const options: ConnectionOptions = { socket, minVersion: 'TLSv1.2' };
  let user: string | undefined;
  let psk: { user: string; from: string } | undefined;
  if (keys) {
    user = o.username ?? [...keys.keys()][0]!;
    const key = keys.get(user);
    if (key === undefined) throw new NbdInvalidArgumentError(`TLS: no PSK key for user "${user}" in ${o.pskFile ?? 'the keys given'}`);
    const identity = user;
    psk = { user, from: o.pskFile ?? 'the keys given' };
    Object.assign(options, {
      ciphers: `${tls.DEFAULT_CIPHERS}:${PSK_CIPHERS}`,
      pskCallback: () => ({ psk: key, identity }),
      checkServerIdentity: () => undefined,
    });
  } else {
    const m = await x509(o, 'client');
    const verify = o.verifyPeer !== false;
    const name = o.hostname ?? host;
    Object.assign(options, {
      ca: m.ca,
      cert: m.cert,
      key: m.key,
      crl: m.crl,
      rejectUnauthorized: verify,
      ...(name !== undefined && !name.startsWith('/') ? { servername: name } : {}),
      ...(verify ? {} : { checkServerIdentity: () => undefined }),
    });
  }
  const s = tls.connect(options);
  return clientHandshake(
    s,
    timeoutMs,
    () => identityOf(s, user, false),
    (e) => clientRefusal(e, psk),
  );
}

function identityOf(s: TLSSocket, pskUser: string | undefined, isServer: boolean): TlsIdentity {
  const cipher = s.getCipher();
  const identity: TlsIdentity = { protocol: s.getProtocol() ?? 'unknown', cipher: cipher?.standardName ?? cipher?.name ?? 'unknown' };
  if (pskUser !== undefined) identity.psk = pskUser;
  else if (isServer) {
    const peer = s.getPeerCertificate();
    if (peer?.subject)
      identity.subject = Object.entries(peer.subject)
        .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`)
        .join(',');
  }
  return identity;
}

/** Waits for the client handshake of `s` (`secureConnect`), or its failure or the time limit. */
function clientHandshake(
  s: TLSSocket,
  timeoutMs: number,
  identify: () => TlsIdentity,
  explain: (e: Error) => string,
): Promise<{ socket: TLSSocket; identity: TlsIdentity }> {
  const { promise, resolve, reject } = Promise.withResolvers<{ socket: TLSSocket; identity: TlsIdentity }>();
  const timer = setTimeout(() => fail(new NbdTimeoutError(`TLS handshake did not finish within ${timeoutMs} ms`)), timeoutMs);
  timer.unref();
  function fail(e: Error): void {
    clearTimeout(timer);
    s.destroy();
    reject(e instanceof NbdTimeoutError ? e : new ProtocolError(explain(e), { cause: e }));
  }
  s.once('error', fail);
  s.once('secureConnect', () => {
    clearTimeout(timer);
    s.off('error', fail);
    try {
      resolve({ socket: s, identity: identify() });
    } catch (e) {
      fail(e as Error);
    }
  });
  return promise;
}

// ------------------------------------------------------------ refusals, said once
// OpenSSL's own text (`40AD…:error:0A00041B:SSL routines:ssl3_read_bytes:tlsv1 alert
// decrypt error:…`) names neither side nor cause. A failed handshake is one of: the
// peer's alert (it refused), our own check (we refused), or the peer hanging up
// without a word (GnuTLS peers, nbdkit and qemu-nbd, do so on a wrong PSK key or user).

/** The parts of a handshake error that tell who refused and why. */
interface Failure {
  /** The peer's alert, e.g. `decrypt error`, `handshake failure`, `unknown ca`. */
  alert: string | undefined;
  /** Our own side's reason (OpenSSL's short text, or Node's message). */
  reason: string;
  /** The peer closed the connection mid-handshake without an alert. */
  hungUp: boolean;
  code: string | undefined;
}

function failureOf(e: Error): Failure {
  const err = e as Error & { code?: string; reason?: string };
  const reason = err.reason ?? err.message.split('\n')[0]!;
  const alert = /\balert (.+)$/.exec(err.reason ?? '')?.[1];
  const hungUp = err.code === 'ECONNRESET' || /socket disconnected|socket hang up/.test(err.message);
  return { alert, reason, hungUp, code: err.code };
}

/** Node's checks of a server certificate (chain, dates, name): the client refused it. */
const CERT_CHECK = /^(CERT_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|ERR_TLS_CERT_ALTNAME)/;
/** The chain checks among them: no CA we were given signed it. */
const CHAIN_CHECK = /^(UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO)/;

/** Why our client's handshake failed, in one sentence that says which side refused. */
function clientRefusal(e: Error, psk: { user: string; from: string } | undefined): string {
  const f = failureOf(e);
  if (psk !== undefined) {
    const who = `PSK user "${psk.user}"`;
    if (f.alert === 'decrypt error') return `the server refused TLS: its key for ${who} is not the one in ${psk.from} (a wrong key)`;
    if (f.alert === 'handshake failure' || f.alert === 'unknown psk identity')
      return `the server refused TLS (alert "${f.alert}"): it has no key for ${who} (a wrong username?)`;
    if (CERT_CHECK.test(f.code ?? ''))
      return "refused the server's TLS certificate: the server takes X.509 certificates (tls-certificates=), not PSK keys";
    if (f.alert !== undefined || f.hungUp) {
      const what = f.alert !== undefined ? `refused TLS (alert "${f.alert}")` : 'closed the connection during the TLS handshake';
      return `the server ${what}: a wrong PSK key or username? (${who}, key from ${psk.from})`;
    }
  } else {
    if (CERT_CHECK.test(f.code ?? '')) {
      // Node's own hint (`--use-system-ca`) is for the system's CAs, not the ca-cert.pem we were given.
      const hint = CHAIN_CHECK.test(f.code ?? '') ? ' (is it signed by the CA in ca-cert.pem?)' : '';
      return `refused the server's TLS certificate: ${e.message.split('; ')[0]}${hint}`;
    }
    if (f.alert === 'certificate required') return 'the server refused TLS: it wants a client certificate (client-cert.pem)';
    if (f.alert === 'handshake failure')
      return 'the server refused TLS (alert "handshake failure"): it may take PSK keys only (tls-psk-file=), or no cipher suite we offer';
    if (f.alert !== undefined) return `the server refused TLS (alert "${f.alert}")`;
    if (f.hungUp) return 'the server closed the connection during the TLS handshake (does it take PSK keys only? then give tls-psk-file=)';
  }
  return `TLS handshake failed: ${f.reason}`;
}

/** Why a client's handshake with our server failed, for the server's log: which side refused, and the likely cause. */
function serverRefusal(e: Error, psk: { user: string | undefined; known: boolean } | undefined): string {
  const f = failureOf(e);
  if (psk !== undefined && f.alert === undefined && !f.hungUp) {
    if (psk.user === undefined) return `refused TLS: the client offered no PSK username (this server takes PSK keys only; ${f.reason})`;
    if (!psk.known) return `refused TLS: PSK user "${psk.user}" is not in our keys (a wrong username on the client?)`;
    if (f.code === 'ERR_SSL_BINDER_DOES_NOT_VERIFY' || /decrypt|bad record mac/.test(f.reason))
      return `refused TLS: the client's key for PSK user "${psk.user}" is not ours (a wrong key on the client)`;
  }
  if (f.code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE')
    return 'refused TLS: the client sent no certificate (this server checks client certificates)';
  if (f.alert === 'unknown ca' || f.alert === 'bad certificate' || f.alert === 'certificate unknown')
    return `the client refused TLS (alert "${f.alert}"): it does not trust our certificate`;
  if (f.alert !== undefined) return `the client refused TLS (alert "${f.alert}")`;
  if (f.hungUp) return 'the client closed the connection during the TLS handshake';
  return `TLS handshake failed: ${f.reason}`;
}
