// HttpDevice's exchanges, on Node's own HTTP client (node:http and node:https with a
// keep-alive Agent per scheme: a bounded pool of reused connections, requests beyond
// it wait in the Agent's queue). Three things are asked of a server: its answer to one
// request (`send`), the image's size and validators at the end of its redirects
// (`probe`), and a byte range read straight into the caller's buffer (`readRange`),
// with every reply checked against the request.
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { abortError, NbdUnsupportedError, tieToSignal } from '@nbd/protocol';
import type { HttpSettings } from './http-options.js';
import { HttpAttemptError, type Next } from './http-retry.js';

/** What identifies one version of the image: its size, and the validators the server gave. */
export interface Validators {
  size: number;
  etag: string | undefined;
  lastModified: string | undefined;
}

/** Where the image is (after redirects) and what it is. */
export interface Probe extends Validators {
  target: string;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** A URL for messages: no query (a pre-signed URL's query is a credential) and no user info. */
export function shown(url: string | URL): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?…' : ''}`;
}

/** Whether an error of the network or TLS layers is worth another attempt. */
function networkNext(err: NodeJS.ErrnoException): Next {
  const code = err.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME|ERR_SSL|ERR_TLS/.test(code)) return 'fail';
  if (code === 'ENOTFOUND' || code === 'ERR_INVALID_URL') return 'fail';
  return 'retry';
}

/** What a status means for a request that should have succeeded. */
function statusNext(status: number, onTarget: boolean): Next {
  if (status >= 500 || status === 408 || status === 429) return 'retry';
  // The image moved, or a redirect's target is gone or refuses (an expired pre-signed URL): ask the original URL again.
  if (REDIRECTS.has(status) || (onTarget && (status === 401 || status === 403 || status === 404 || status === 410))) return 'resolve';
  return 'fail';
}

/** Retry-After in milliseconds (seconds, or an HTTP date). */
function retryAfterOf(res: IncomingMessage): number | undefined {
  const v = res.headers['retry-after'];
  if (v === undefined) return undefined;
  const s = Number(v);
  if (Number.isFinite(s) && s >= 0) return s * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - Date.now());
}

// Content-Range: "bytes START-END/TOTAL" (TOTAL may be a star), or "bytes star/TOTAL" in a 416.
export function parseContentRange(v: string | undefined): { start?: number; end?: number; total?: number } | undefined {
  const m = /^bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)$/i.exec(v?.trim() ?? '');
  if (!m) return undefined;
  const num = (s: string | undefined) => (s === undefined || s === '*' ? undefined : Number(s));
  return { start: num(m[1]), end: num(m[2]), total: num(m[3]) };
}

/** Where a read goes: the image's current URL (after redirects), and what the image must still be. */
export interface RangeRequest {
  target: URL;
  /** The origin of the URL given (credentials are not sent to others). */
  origin: string;
  /** `target` came from a redirect (a failure there asks the original URL again). */
  redirected: boolean;
  image: Validators;
}

/** Connections and requests for one HttpDevice. */
export class HttpClient {
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;

  constructor(private readonly settings: HttpSettings) {
    const pool = { keepAlive: true, maxSockets: settings.connections, maxFreeSockets: settings.connections, scheduling: 'lifo' as const };
    this.httpAgent = new http.Agent(pool);
    this.httpsAgent = new https.Agent({ ...pool, ca: settings.ca, rejectUnauthorized: settings.verify });
  }

  /**
   * One request; `onResponse` reads or drops the body and says what the answer is.
   * Within the settings' timeout, or rejected (the connection is then destroyed).
   */
  send<T>(
    url: URL,
    method: 'GET' | 'HEAD',
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
    onResponse: (res: IncomingMessage, fail: (e: Error) => void) => Promise<T> | T,
  ): Promise<T> {
    if (signal?.aborted) return Promise.reject(abortError(signal, 'an HTTP request'));
    const secure = url.protocol === 'https:';
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    let settled = false;
    let response: IncomingMessage | undefined;
    const finish = (e: Error | undefined, v?: T) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      untie();
      if (e) {
        // Not one more byte into the caller's buffer once the call has failed (timed out, aborted).
        response?.removeAllListeners('data');
        req.destroy();
        reject(e);
      } else resolve(v as T);
    };
    const req = (secure ? https : http).request(url, {
      method,
      agent: secure ? this.httpsAgent : this.httpAgent,
      headers: { ...headers, 'accept-encoding': 'identity' },
    });
    const timer = setTimeout(
      () => finish(new HttpAttemptError(`${method} ${shown(url)}: no complete answer within ${this.settings.timeout} ms`, 'retry')),
      this.settings.timeout,
    );
    const untie = tieToSignal(signal, () => finish(abortError(signal, 'an HTTP request')));
    req.on('error', (e: NodeJS.ErrnoException) =>
      finish(
        new HttpAttemptError(`${method} ${shown(url)}: ${e.code ?? e.message}${e.code ? ` (${e.message})` : ''}`, networkNext(e), {
          cause: e,
          // A kept-alive connection the server had just closed: try again at once, on a fresh one.
          retryAfter: req.reusedSocket && (e.code === 'ECONNRESET' || e.code === 'EPIPE') ? 0 : undefined,
        }),
      ),
    );
    req.on('response', (res) => {
      response = res;
      // A body that breaks off is reported by whoever reads it (bodyInto, drained); never an unhandled 'error'.
      res.on('error', () => {});
      Promise.resolve()
        .then(() => onResponse(res, (e) => finish(e)))
        .then(
          (v) => finish(undefined, v),
          (e: Error) => finish(e),
        );
    });
    req.end();
    return promise;
  }

  /** Status line and headers only: the body (of a HEAD, a redirect or an error) is dropped, the connection kept when it can be. */
  head(url: URL, method: 'GET' | 'HEAD', headers: Record<string, string>, signal: AbortSignal | undefined): Promise<IncomingMessage> {
    return this.send(url, method, headers, signal, (res) => drained(res, method));
  }

  /** Headers for a request to `url`, given the original URL (credentials do not follow a redirect to another origin). */
  headersFor(url: URL, origin: string): Record<string, string> {
    const h: Record<string, string> = {};
    for (const [k, v] of this.settings.headers) {
      if (url.origin !== origin && k.toLowerCase() === 'authorization') continue;
      h[k] = h[k] === undefined ? v : `${h[k]}, ${v}`;
    }
    return h;
  }

  /**
   * Finds the image: HEAD (size from Content-Length when the server says it takes
   * byte ranges), else `GET Range: bytes=0-0` (a pre-signed URL is signed for GET only;
   * the size is Content-Range's total). Redirects are followed up to the limit.
   */
  async probe(url: string, signal: AbortSignal | undefined): Promise<Probe> {
    const viaHead = await this.follow(url, 'HEAD', signal);
    const h = viaHead.res;
    const length = Number(h.headers['content-length']);
    if (h.statusCode === 200 && /\bbytes\b/i.test(String(h.headers['accept-ranges'] ?? '')) && Number.isSafeInteger(length)) {
      return { target: viaHead.url.href, size: length, ...validatorsOf(h) };
    }
    const viaGet = await this.follow(url, 'GET', signal);
    const g = viaGet.res;
    const where = `GET ${shown(viaGet.url)} (Range: bytes=0-0)`;
    if (g.statusCode === 206) {
      const cr = parseContentRange(g.headers['content-range']);
      if (cr?.start !== 0 || cr.end !== 0 || cr.total === undefined)
        throw new HttpAttemptError(`${where}: 206 with Content-Range ${JSON.stringify(g.headers['content-range'])}`, 'fail');
      return { target: viaGet.url.href, size: cr.total, ...validatorsOf(g) };
    }
    if (g.statusCode === 416) {
      const total = parseContentRange(g.headers['content-range'])?.total;
      if (total === 0) return { target: viaGet.url.href, size: 0, ...validatorsOf(g) };
    }
    if (g.statusCode === 200) {
      throw new NbdUnsupportedError(
        `HttpDevice: ${shown(viaGet.url)} does not take byte ranges (200 OK to Range: bytes=0-0${h.statusCode === 200 ? ', no Accept-Ranges: bytes' : ''})`,
      );
    }
    throw new HttpAttemptError(`${where}: ${g.statusCode} ${g.statusMessage ?? ''}`.trimEnd(), statusNext(g.statusCode ?? 0, false), {
      retryAfter: retryAfterOf(g),
    });
  }

  /** Follows redirects from `start` with `method` (a GET asks for bytes=0-0); the final answer's headers. */
  private async follow(
    start: string,
    method: 'GET' | 'HEAD',
    signal: AbortSignal | undefined,
  ): Promise<{ url: URL; res: IncomingMessage }> {
    const origin = new URL(start).origin;
    const seen: string[] = [];
    let url = new URL(start);
    for (;;) {
      const headers = this.headersFor(url, origin);
      if (method === 'GET') headers.range = 'bytes=0-0';
      const res = await this.head(url, method, headers, signal);
      const location = res.headers.location;
      if (!REDIRECTS.has(res.statusCode ?? 0) || location === undefined) return { url, res };
      seen.push(url.href);
      const next = new URL(location, url);
      if (next.protocol !== 'http:' && next.protocol !== 'https:')
        throw new HttpAttemptError(`${shown(url)} redirects to a ${next.protocol} URL`, 'fail');
      if (seen.length > this.settings.maxRedirects) {
        const loop = seen.includes(next.href) ? ' (a loop)' : '';
        throw new HttpAttemptError(`${method} ${shown(start)}: more than ${this.settings.maxRedirects} redirects${loop}`, 'fail');
      }
      url = next;
    }
  }

  /**
   * `GET Range: bytes=OFFSET-…` of `target` into `buf`. Only a 206 whose Content-Range is
   * the range asked for, with the image's size and validators, and a body of exactly
   * `buf.length` bytes fills `buf` (a 200 is taken only for a read of the whole image).
   */
  readRange(req: RangeRequest, buf: Uint8Array, offset: number, signal: AbortSignal | undefined): Promise<void> {
    const { target, image } = req;
    const end = offset + buf.length - 1;
    const headers = this.headersFor(target, req.origin);
    headers.range = `bytes=${offset}-${end}`;
    const where = `GET ${shown(target)} (Range: bytes=${offset}-${end})`;
    return this.send(target, 'GET', headers, signal, (res, fail) => {
      const status = res.statusCode ?? 0;
      const whole = status === 200 && offset === 0 && buf.length === image.size;
      const problem = whole || status === 206 ? replyProblem(res, status, offset, end, image) : undefined;
      if (status !== 206 && !whole) {
        res.destroy(); // never read a 200's whole file, nor an error page
        if (status === 200) throw new HttpAttemptError(`${where}: the server ignored Range (200 OK with the whole file)`, 'fail');
        if (status === 416) throw new HttpAttemptError(`${where}: 416 Range Not Satisfiable (the file shrank?)`, 'fail');
        throw new HttpAttemptError(`${where}: ${status} ${res.statusMessage ?? ''}`.trimEnd(), statusNext(status, req.redirected), {
          retryAfter: retryAfterOf(res),
        });
      }
      if (problem !== undefined) {
        res.destroy();
        throw new HttpAttemptError(`${where}: ${problem}`, 'fail');
      }
      return bodyInto(res, buf, where, fail);
    });
  }

  /** Closes every connection. */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}

function validatorsOf(res: IncomingMessage): { etag: string | undefined; lastModified: string | undefined } {
  return { etag: res.headers.etag, lastModified: res.headers['last-modified'] };
}

/** How `now` differs from `was` (a validator both have, or the size), if it does. */
export function changeOf(was: Validators, now: Partial<Validators>): string | undefined {
  if (now.size !== undefined && now.size !== was.size) return `size ${was.size} became ${now.size}`;
  if (was.etag !== undefined && now.etag !== undefined && now.etag !== was.etag) return `ETag ${was.etag} became ${now.etag}`;
  if (was.lastModified !== undefined && now.lastModified !== undefined && now.lastModified !== was.lastModified)
    return `Last-Modified ${was.lastModified} became ${now.lastModified}`;
  return undefined;
}

/** What is wrong with a 206 (or a whole-file 200) for `[offset, end]` of `image`, if anything. */
function replyProblem(res: IncomingMessage, status: number, offset: number, end: number, image: Validators): string | undefined {
  const h = res.headers;
  const change = changeOf(image, { etag: h.etag, lastModified: h['last-modified'] });
  if (change !== undefined) return `the file changed (${change})`;
  const encoding = h['content-encoding'];
  if (encoding !== undefined && encoding !== 'identity') return `the body is encoded (Content-Encoding: ${encoding})`;
  if (status === 206) {
    const cr = parseContentRange(h['content-range']);
    if (cr === undefined || cr.start !== offset || cr.end !== end)
      return `206 with Content-Range ${JSON.stringify(h['content-range'] ?? null)}, not bytes ${offset}-${end}`;
    if (cr.total !== undefined && cr.total !== image.size)
      return `the file changed (its size was ${image.size}, Content-Range says ${cr.total})`;
  }
  const length = h['content-length'];
  if (length !== undefined && Number(length) !== end - offset + 1) return `Content-Length ${length}, not ${end - offset + 1}`;
  return undefined;
}

/** Copies the body into `buf`; more bytes than `buf` holds, or fewer, is a failed attempt. */
function bodyInto(res: IncomingMessage, buf: Uint8Array, where: string, fail: (e: Error) => void): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  let pos = 0;
  res.on('data', (chunk: Buffer) => {
    if (pos + chunk.length > buf.length) {
      fail(new HttpAttemptError(`${where}: the body is longer than the ${buf.length} bytes asked for`, 'fail'));
      return;
    }
    buf.set(chunk, pos);
    pos += chunk.length;
  });
  res.on('end', () =>
    pos === buf.length ? resolve() : reject(new HttpAttemptError(`${where}: short body (${pos} of ${buf.length} bytes)`, 'retry')),
  );
  const cut = (cause?: Error) =>
    reject(new HttpAttemptError(`${where}: short body (${pos} of ${buf.length} bytes, the connection closed)`, 'retry', { cause }));
  res.on('error', cut);
  res.on('close', () => {
    if (!res.complete) cut();
  });
  return promise;
}

/** Drops a body we do not read, keeping the connection for reuse when the body is small. */
function drained(res: IncomingMessage, method: 'GET' | 'HEAD'): Promise<IncomingMessage> {
  const length = Number(res.headers['content-length'] ?? Number.NaN);
  if (method === 'GET' && !(length <= 64 * 1024)) {
    res.destroy();
    return Promise.resolve(res);
  }
  const { promise, resolve } = Promise.withResolvers<IncomingMessage>();
  res.on('end', () => resolve(res));
  res.on('close', () => resolve(res));
  res.resume();
  return promise;
}
