// The server's transmission engine (TransmissionEngine + ReplyWriter) over a device,
// fed requests as ClientStreamDecoder frames them; what it writes is then read back
// by our client's strict reply assembler, which checks every MUST of the spec about
// replies. Input: mode byte (1: structured replies, 2: extended headers, 4: read-only,
// 8: device is asynchronous, 16: device fails at offsets ≥ 12 KiB (throws or rejects),
// 32: 512-byte minimum block size, 64: base:allocation selected, 128: a device
// without lend/extents), then the request stream. Cookies are renumbered per request.
// Oracles: the engine never throws; every request but DISC gets exactly one complete
// reply that the strict client accepts; every payload lease is released exactly once.

import { assembleChunk, assembleSimple, simpleReplyPayload } from '../../packages/client/dist/reply-assembler.js';
import {
  ClientStreamDecoder,
  Command,
  CommandFlag,
  decodeBlockStatusPayload,
  ServerStreamDecoder,
} from '../../packages/protocol/dist/index.js';
import { Budget } from '../../packages/server/dist/budget.js';
import { MemoryDevice } from '../../packages/server/dist/index.js';
import { ReplyWriter } from '../../packages/server/dist/reply-writer.js';
import { blockSizesOf, isReadOnly, transmissionFlags } from '../../packages/server/dist/session.js';
import { TransmissionEngine } from '../../packages/server/dist/transmission-engine.js';
import { invariant, rejecting, replyStateFor } from './common.mjs';

const SIZE = 16 * 1024;
const FAIL_AT = 12 * 1024;
const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** A device over MemoryDevice whose behaviour the mode chooses. */
const mem = new MemoryDevice(SIZE); // one for every run (its pages are reused), emptied first
function deviceFor(mode) {
  mem.trim(0, SIZE);
  const async = (mode & 8) !== 0;
  const failing = (mode & 16) !== 0;
  const run = (offset, fn) => {
    if (failing && offset >= FAIL_AT) {
      const e = Object.assign(new Error('injected failure'), { code: 'ENOSPC' });
      if (async) return Promise.reject(e);
      throw e;
    }
    return async ? Promise.resolve().then(fn) : fn();
  };
  const dev = {
    size: SIZE,
    multiConn: true,
    readAt: (b, o, opts) => run(o, () => mem.readAt(b, o, opts)),
    writeAt: (b, o, opts) => run(o, () => mem.writeAt(b, o, opts)),
    sync: () => (async ? Promise.resolve() : undefined),
    trim: (o, l) => run(o, () => mem.trim(o, l)),
    zero: (o, l, opts) => run(o, () => mem.zero(o, l, opts)),
  };
  if ((mode & 128) === 0) {
    dev.extents = (o, l, opts) => run(o, () => mem.extents(o, l, opts));
    if (!failing && !async) dev.lend = (o, l) => mem.lend(o, l);
  }
  if (mode & 32) dev.blockSizes = { min: 512, preferred: 4096, max: 1 << 20 };
  return dev;
}

class CollectingTransport {
  chunks = [];
  closed = false;
  writableLength = 0;
  needsDrain = false;
  onDrain = undefined;
  onClose = undefined;
  peer = { address: 'fuzz' };
  write(bytes, done) {
    this.chunks.push(Uint8Array.from(bytes)); // copied: pooled buffers are reused after done
    done?.();
  }
  cork() {}
  uncork() {}
  read() {}
  pause() {}
  resume() {}
  rebuffer() {}
  end() {}
  destroy() {}
}

export async function fuzz(data) {
  if (data.length < 1) return;
  const mode = data[0];
  const structured = (mode & 3) !== 0;
  const extended = (mode & 2) !== 0;
  const device = deviceFor(mode);
  const exp = { name: 'fuzz', size: SIZE, device };
  const readOnly = isReadOnly(exp, device, (mode & 4) !== 0);
  const session = {
    export: exp,
    device,
    flags: transmissionFlags(device, readOnly, structured, extended),
    blockSizes: blockSizesOf(device, 1 << 20),
    structured,
    extended,
    metaContexts: new Map(structured && mode & 64 ? [[1, 'base:allocation']] : []),
  };
  const transport = new CollectingTransport();
  const budget = new Budget({ maxInFlight: 1 << 20, maxInFlightBytes: 2 ** 52 }, { pinnedBytes: 0 }, transport, () => {});
  const writer = new ReplyWriter(transport, session, () => budget.written());
  const engine = new TransmissionEngine(session, writer, budget, silent, 'fuzz');
  const leases = [];
  const decoder = new ClientStreamDecoder({ maxPayload: 1 << 20, maxDrain: 1 << 22 });
  decoder.startTransmission(extended, session.blockSizes.max);
  decoder.push(data.subarray(1));
  const sent = new Map();
  let cookie = 0n;
  rejecting(() => {
    for (let f = decoder.next(); f !== undefined; f = decoder.next()) {
      const req = { ...f.request, cookie: ++cookie };
      const payload = f.payload && lease(f.payload);
      if (payload) leases.push(payload);
      const outcome = engine.request({ request: req, payload, oversized: f.oversized });
      if (outcome === 'disconnect') break;
      sent.set(req.cookie, { req, payload: f.payload });
    }
  });
  // Device promises settle within microtasks (no I/O): a bounded number of turns answers all.
  for (let i = 0; i < 10_000 && budget.requests > 0; i++) await undefined;
  invariant(budget.requests === 0, `${budget.requests} requests never answered`);
  invariant(
    leases.every((l) => l.releases === 1),
    `payload leases released ${leases.map((l) => l.releases)} times`,
  );
  readBack(transport.chunks, sent, session);
}

/** A payload lease that counts its releases (each must end exactly once). */
function lease(bytes) {
  const l = { bytes, releases: 0, release: () => void l.releases++ };
  return l;
}

/** Reads the server's replies as our strict client would. */
function readBack(chunks, sent, session) {
  const rules = { structured: session.structured, extended: session.extended, strict: true };
  const states = new Map();
  const unsafe = new Set();
  for (const [c, { req, payload }] of sent) {
    let length = Number(req.length);
    let contextIds = [...session.metaContexts.keys()];
    if (req.type === Command.BLOCK_STATUS && session.extended && req.flags & CommandFlag.PAYLOAD_LEN && payload) {
      const p = rejecting(() => decodeBlockStatusPayload(payload)) ? undefined : decodeBlockStatusPayload(payload);
      if (p) {
        length = Number(p.effectLength);
        if (p.contextIds.length > 0) contextIds = p.contextIds;
      }
    }
    // Our client never sends offsets or lengths past 2^53 (it checks them first): such a
    // request must be refused, and its reply is read without the offset rule.
    const safe = req.offset <= BigInt(Number.MAX_SAFE_INTEGER) && Number.isSafeInteger(length);
    states.set(
      c,
      replyStateFor({ command: req.type, offset: safe ? Number(req.offset) : 0, length: safe ? length : 0, flags: req.flags, contextIds }),
    );
    if (!safe) unsafe.add(c);
  }
  const views = { hold() {}, release() {} };
  const d = new ServerStreamDecoder({ maxChunk: 4 << 20 });
  d.startTransmission(session.extended);
  d.readLength = (c) => {
    const st = states.get(c);
    return st === undefined ? undefined : simpleReplyPayload(rules, st);
  };
  for (const c of chunks) d.push(c);
  const done = new Set();
  for (let f = d.next(); f !== undefined; f = d.next()) {
    const c = f.kind === 'chunk' ? f.header.cookie : f.cookie;
    const st = states.get(c);
    invariant(st !== undefined && !done.has(c), `reply for cookie ${c}, which is not waiting`);
    const r = unsafe.has(c) ? { ...rules, strict: false } : rules;
    const outcome = f.kind === 'chunk' ? assembleChunk(r, st, f.header, f.payload, views) : assembleSimple(r, st, f.error, f.data, views);
    if (outcome !== undefined) done.add(c);
    // FLUSH's offset and length are reserved (the client MUST send zeroes; the server may ignore them).
    if (outcome !== undefined && unsafe.has(c) && st.command !== Command.FLUSH) invariant(!outcome.ok, 'a request past 2^53 succeeded');
  }
  invariant(d.buffered === 0, `${d.buffered} bytes of a partial reply left`);
  invariant(done.size === sent.size, `${sent.size - done.size} requests without a complete reply`);
}
