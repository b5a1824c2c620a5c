// Writes fuzz/seeds/<target>/ from the captured conversations with real peers
// (test/captures/vectors) plus a few synthetic streams for what no capture has
// (extended headers from a client, hostile lengths). Run after `tsc -b`:
// node fuzz/make-seeds.mjs. Deterministic: the same captures give the same files.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ClientStreamDecoder,
  Command,
  CommandFlag,
  encodeBlockStatusPayload,
  encodeChunk,
  encodeRequest,
  Option,
  OptionReply,
  ServerStreamDecoder,
} from '../packages/protocol/dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const vectors = join(here, '..', 'test', 'captures', 'vectors');
const seeds = {};
/** Seeds are cut to the fuzzers' -max_len (a cut stream is still a valid prefix). */
const MAX_LEN = 16 * 1024;
const add = (target, ...parts) => {
  const bytes = Buffer.concat(parts.map((p) => Buffer.from(p))).subarray(0, MAX_LEN);
  seeds[target] ??= new Map();
  seeds[target].set(createHash('sha1').update(bytes).digest('hex').slice(0, 16), bytes);
};
const u16 = (n) => Buffer.from([n >> 8, n & 255]);

/** Where the client's stream enters transmission, and what was negotiated. */
function clientSide(c2s, oldstyle) {
  if (oldstyle) return { at: 0, ext: false, exportName: false, noZeroes: false };
  const d = new ClientStreamDecoder();
  d.push(c2s);
  let ext = false;
  let noZeroes = false;
  for (let f = d.next(); f !== undefined; f = d.next()) {
    if (f.kind === 'client-flags') noZeroes = (f.flags & 2) !== 0;
    if (f.kind !== 'option') continue;
    if (f.option === Option.EXTENDED_HEADERS) ext = true;
    if (f.option === Option.GO || f.option === Option.EXPORT_NAME) {
      return { at: c2s.length - d.buffered, ext, exportName: f.option === Option.EXPORT_NAME, noZeroes };
    }
  }
  return undefined;
}

/** Where the server's stream enters transmission, and whether structured replies were agreed. */
function serverSide(s2c, cs) {
  const d = new ServerStreamDecoder();
  d.push(s2c);
  let structured = false;
  for (let f = d.next(); f !== undefined; f = d.next()) {
    if (f.kind === 'greeting' && f.greeting.style === 'oldstyle') return { at: s2c.length - d.buffered, structured };
    if (f.kind === 'greeting' && cs.exportName) d.expectExportNameReply(cs.noZeroes);
    if (f.kind === 'export-name-reply') return { at: s2c.length - d.buffered, structured };
    if (f.kind === 'option-reply' && f.type === OptionReply.ACK) {
      if (f.option === Option.STRUCTURED_REPLY || f.option === Option.EXTENDED_HEADERS) structured = true;
      if (f.option === Option.GO) {
        d.startTransmission(cs.ext);
        return { at: s2c.length - d.buffered, structured };
      }
    }
  }
  return undefined;
}

for (const file of readdirSync(vectors)
  .filter((f) => f.endsWith('.json'))
  .sort()) {
  const v = JSON.parse(readFileSync(join(vectors, file), 'utf8'));
  for (const conn of v.connections) {
    const c2s = Buffer.from(conn.c2s, 'hex');
    const s2c = Buffer.from(conn.s2c, 'hex');
    const oldstyle = s2c.length >= 16 && s2c.readBigUInt64BE(8) === 0x00420281861253n;
    add('protocol-client-stream', [0, 0], c2s);
    add('server-negotiation', [0], c2s);
    add('server-negotiation', [9], c2s);
    const cs = clientSide(c2s, oldstyle);
    if (cs === undefined) continue;
    const ss = serverSide(s2c, cs);
    const ext = cs.ext ? 2 : 0;
    add('protocol-server-stream', [ext | (cs.exportName ? 4 : 0) | (cs.noZeroes ? 8 : 0), 0], s2c);
    const c2sTx = c2s.subarray(cs.at);
    if (c2sTx.length === 0) continue;
    add('protocol-client-stream', [1 | ext, 0], c2sTx);
    for (const mode of [1 | 64, 0, 8 | 1 | 64, 16 | 1, 32 | 128 | 1 | 64]) add('server-transmission', [mode | ext], c2sTx);
    if (ss === undefined) continue;
    const s2cTx = s2c.subarray(ss.at);
    add('protocol-server-stream', [1 | ext, 0], s2cTx);
    add('client-reply-assembly', [(ss.structured ? 1 : 0) | ext], u16(Math.min(c2sTx.length, 0xffff)), c2sTx.subarray(0, 0xffff), s2cTx);
  }
}

// Synthetic: an extended-header client (every command, the BLOCK_STATUS payload form,
// a WRITE over the limit), and replies with holes, errors and extents for both styles.
const req = (type, cookie, offset, length, flags = 0, ext = false) =>
  encodeRequest({ type, flags, cookie: BigInt(cookie), offset: BigInt(offset), length: BigInt(length) }, ext);
for (const ext of [false, true]) {
  const e = ext ? 2 : 0;
  const stream = Buffer.concat([
    req(Command.WRITE, 1, 0, 4096, ext ? CommandFlag.PAYLOAD_LEN : 0, ext),
    Buffer.alloc(4096, 0xab),
    req(Command.READ, 2, 0, 8192, 0, ext),
    req(Command.WRITE_ZEROES, 3, 4096, 4096, CommandFlag.NO_HOLE, ext),
    req(Command.TRIM, 4, 8192, 4096, CommandFlag.FUA, ext),
    req(Command.FLUSH, 5, 0, 0, 0, ext),
    req(Command.CACHE, 6, 0, 65536, 0, ext),
    req(Command.BLOCK_STATUS, 7, 0, 65536, CommandFlag.REQ_ONE, ext),
    ...(ext
      ? [
          req(Command.BLOCK_STATUS, 8, 0, 12, CommandFlag.PAYLOAD_LEN, true),
          encodeBlockStatusPayload({ effectLength: 65536n, contextIds: [1] }),
        ]
      : []),
    req(Command.READ, 9, 0, 65536, 0, ext),
    req(Command.READ, 10, 60000, 8192, 0, ext),
    req(Command.DISC, 11, 0, 0, 0, ext),
  ]);
  add('protocol-client-stream', [1 | e, 7], stream);
  for (const mode of [1 | 64, 8 | 1 | 64, 16 | 1 | 64, 32 | 1, 4 | 1 | 64]) add('server-transmission', [mode | e], stream);
  const at = { extended: ext, offset: 0n };
  const replies = Buffer.concat([
    encodeChunk(2n, { kind: 'offset-data', offset: 0n, data: new Uint8Array(4096).fill(1) }, { ...at, done: false }),
    encodeChunk(2n, { kind: 'offset-hole', offset: 4096n, size: 4096 }, at),
    encodeChunk(1n, { kind: 'error-offset', error: 28, message: 'no space', offset: 0n }, at),
    encodeChunk(7n, { kind: ext ? 'block-status-ext' : 'block-status', contextId: 1, extents: [{ length: 65536n, flags: 3 }] }, at),
    encodeChunk(5n, { kind: 'none' }, at),
    encodeChunk(3n, { kind: 'error', error: 5, message: 'io' }, at),
  ]);
  const requests = Buffer.concat([
    req(Command.WRITE, 1, 0, 0, ext ? CommandFlag.PAYLOAD_LEN : 0, ext),
    req(Command.READ, 2, 0, 8192, 0, ext),
    req(Command.WRITE_ZEROES, 3, 0, 4096, 0, ext),
    req(Command.FLUSH, 5, 0, 0, 0, ext),
    req(Command.BLOCK_STATUS, 7, 0, 65536, 0, ext),
  ]);
  add('client-reply-assembly', [1 | e], u16(requests.length), requests, replies);
  add('protocol-server-stream', [1 | e, 3], replies);
}

for (const [target, files] of Object.entries(seeds)) {
  const dir = join(here, 'seeds', target);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [name, bytes] of files) writeFileSync(join(dir, name), bytes);
  console.log(`${target}: ${files.size} seeds`);
}
