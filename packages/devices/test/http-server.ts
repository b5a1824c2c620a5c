// A scripted HTTP server for HttpDevice's tests (not exported by the package): it serves
// one image with correct Range answers, ETag and Last-Modified, unless a test's `fault`
// takes the request first (a 503, a short body, a changed ETag, a reset, silence…).
// Every request is recorded with its headers.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface Seen {
  method: string;
  url: string;
  range: string | undefined;
  headers: IncomingMessage['headers'];
  /** The connection it came on (a counter per server). */
  socket: number;
}

/** Handles a request itself (returns true) or lets the good answer go out (false). */
export type Fault = (req: IncomingMessage, res: ServerResponse, seen: Seen[]) => boolean;

export interface ImageServer {
  url: string;
  origin: string;
  seen: Seen[];
  image: Uint8Array;
  /** Replaced by each test; `undefined`: always the good answer. */
  fault: Fault | undefined;
  etag: string;
  lastModified: string;
  /** The most connections open at once. */
  peakConnections: number;
  close(): Promise<void>;
}

/** The correct answer for `image`: HEAD, GET (200, or 206 for one `bytes=a-b` range), 416. */
export function answer(req: IncomingMessage, res: ServerResponse, s: Pick<ImageServer, 'image' | 'etag' | 'lastModified'>): void {
  const size = s.image.length;
  const base = { etag: s.etag, 'last-modified': s.lastModified, 'accept-ranges': 'bytes' };
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (m === null) {
    res.writeHead(200, { ...base, 'content-length': size });
    res.end(req.method === 'HEAD' ? undefined : s.image);
    return;
  }
  const start = Number(m[1]);
  const end = Math.min(m[2] === '' ? size - 1 : Number(m[2]), size - 1);
  if (start >= size) {
    res.writeHead(416, { ...base, 'content-range': `bytes */${size}` });
    res.end();
    return;
  }
  res.writeHead(206, { ...base, 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': end - start + 1 });
  res.end(req.method === 'HEAD' ? undefined : s.image.subarray(start, end + 1));
}

/** Serves `image` at `/disk.raw` on a loopback port. */
export async function imageServer(image: Uint8Array): Promise<ImageServer> {
  const sockets = new Set<Socket>();
  let ids = 0;
  const ids_ = new WeakMap<Socket, number>();
  const state: ImageServer = {
    url: '',
    origin: '',
    seen: [],
    image,
    fault: undefined,
    etag: '"v1"',
    lastModified: new Date(Date.UTC(2026, 0, 1)).toUTCString(),
    peakConnections: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
  const server: Server = createServer((req, res) => {
    state.seen.push({
      method: req.method ?? '',
      url: req.url ?? '',
      range: req.headers.range,
      headers: req.headers,
      socket: ids_.get(req.socket) ?? -1,
    });
    if (state.fault?.(req, res, state.seen)) return;
    answer(req, res, state);
  });
  server.on('connection', (s: Socket) => {
    ids_.set(s, ids++);
    sockets.add(s);
    state.peakConnections = Math.max(state.peakConnections, sockets.size);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.url = `${state.origin}/disk.raw`;
  return state;
}

/** GETs with a Range header that the server saw (the reads, not the probe). */
export const reads = (s: ImageServer) => s.seen.filter((r) => r.method === 'GET' && r.range !== 'bytes=0-0');
