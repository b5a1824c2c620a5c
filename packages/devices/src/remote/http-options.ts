// HttpDevice's options: what nbdkit's curl plugin takes as parameters (header=,
// cookie=, cainfo=, sslverify=, timeout=, followlocation=, user-agent=), plus what a
// disk image import over a flaky network needs (retries with a deadline, connections,
// how long a redirect's target is trusted). Checked once, into a plain record that
// also travels to worker threads (structuredClone).
import { readFileSync } from 'node:fs';
import { NbdInvalidArgumentError } from '@nbd/protocol';

/** Options of {@link HttpDevice.open}. */
export interface HttpDeviceOptions {
  /** Extra request headers (nbdkit's `header=`), as a record or `Name: value` lines. Sent on every request. */
  headers?: Record<string, string> | readonly string[];
  /** A `Cookie` header value (nbdkit's `cookie=`): `name=value; name2=value2`. */
  cookie?: string;
  /** Trust these CA certificates (PEM text) instead of Node's bundled ones (nbdkit's `cainfo=`). */
  ca?: string;
  /** A PEM file of CA certificates to trust instead of Node's bundled ones. */
  caFile?: string;
  /** Check the server's certificate (default true; nbdkit's `sslverify=false` turns it off). */
  verify?: boolean;
  /** Milliseconds one request may take, connecting included (default 30000; nbdkit's `timeout=`, in seconds there). */
  timeout?: number;
  /** Attempts after the first for a 5xx, 408, 429, a reset or a timeout (default 5). */
  retries?: number;
  /** Milliseconds before the first retry, doubling each time up to 8 s (default 250). */
  retryDelay?: number;
  /** No retry starts later than this many milliseconds after the first attempt (default 60000). */
  retryDeadline?: number;
  /** Keep-alive connections per server (default 16). */
  connections?: number;
  /** Redirects followed to find the image (default 10; 0: none, as nbdkit's `followlocation=false`). */
  maxRedirects?: number;
  /** Milliseconds a redirect's target is used before the URL is resolved again (default 300000; a failure re-resolves at once). */
  redirectTtl?: number;
  /** The `User-Agent` header (default `nbd-http-device`). */
  userAgent?: string;
}

/** The checked options, all plain values (they go to worker threads as they are). */
export interface HttpSettings {
  headers: [string, string][];
  ca: string | undefined;
  verify: boolean;
  timeout: number;
  retries: number;
  retryDelay: number;
  retryDeadline: number;
  connections: number;
  maxRedirects: number;
  redirectTtl: number;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Headers the device sets itself: a user value would break the checks of every reply. */
const RESERVED = new Set(['range', 'host', 'content-length', 'transfer-encoding', 'connection', 'accept-encoding', 'if-range']);

function bad(message: string): never {
  throw new NbdInvalidArgumentError(`HttpDevice: ${message}`);
}

function whole(name: string, value: number | undefined, fallback: number, min = 0, max = 2 ** 31 - 1): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < min || v > max) bad(`${name} must be a whole number from ${min} to ${max}, got ${value}`);
  return v;
}

/** One header, checked: a name token, a value without line breaks, not one the device sets. */
function header(name: string, value: string): [string, string] {
  const n = name.trim();
  if (!TOKEN.test(n)) bad(`bad header name ${JSON.stringify(name)}`);
  if (/[\r\n\0]/.test(value)) bad(`the value of header ${n} holds a line break or NUL`);
  if (RESERVED.has(n.toLowerCase())) bad(`header ${n} is set by the device itself`);
  return [n, value.trim()];
}

function headersOf(h: HttpDeviceOptions['headers']): [string, string][] {
  if (h === undefined) return [];
  if (Array.isArray(h))
    return h.map((line: string) => {
      const colon = line.indexOf(':');
      if (colon <= 0) bad(`header ${JSON.stringify(line)} is not "Name: value"`);
      return header(line.slice(0, colon), line.slice(colon + 1));
    });
  return Object.entries(h as Record<string, string>).map(([k, v]) => header(k, String(v)));
}

/** Checks `opts` and fills in the defaults. */
export function settingsOf(opts: HttpDeviceOptions): HttpSettings {
  const headers = headersOf(opts.headers);
  if (opts.cookie !== undefined) headers.push(header('Cookie', opts.cookie));
  if (!headers.some(([k]) => k.toLowerCase() === 'user-agent')) headers.push(header('User-Agent', opts.userAgent ?? 'nbd-http-device'));
  if (opts.ca !== undefined && opts.caFile !== undefined) bad('give ca or caFile, not both');
  let ca = opts.ca;
  if (opts.caFile !== undefined) {
    try {
      ca = readFileSync(opts.caFile, 'utf8');
    } catch (e) {
      throw new NbdInvalidArgumentError(`HttpDevice: cannot read caFile ${opts.caFile}: ${(e as Error).message}`, { cause: e });
    }
  }
  if (ca !== undefined && !ca.includes('-----BEGIN CERTIFICATE-----')) bad('ca holds no PEM certificate');
  return {
    headers,
    ca,
    verify: opts.verify ?? true,
    timeout: whole('timeout', opts.timeout, 30_000, 1),
    retries: whole('retries', opts.retries, 5, 0, 100),
    retryDelay: whole('retryDelay', opts.retryDelay, 250),
    retryDeadline: whole('retryDeadline', opts.retryDeadline, 60_000),
    connections: whole('connections', opts.connections, 16, 1, 1024),
    maxRedirects: whole('maxRedirects', opts.maxRedirects, 10, 0, 100),
    redirectTtl: whole('redirectTtl', opts.redirectTtl, 300_000),
  };
}
