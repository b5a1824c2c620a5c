// The server's handshake engine (Negotiation) fed what ClientStreamDecoder makes of
// the input, as a connection would: client flags, then options one at a time until
// it closes or starts transmission; STARTTLS is taken as succeeded. Input: mode byte
// (bits 0-1: TLS off/on/require; 4: read-only; 8: an open hook, which fails for
// export "bad"), then the client's stream. Three exports: default, "disk", and a
// TLS-only "secret". Oracles: the engine never throws; every reply is for the option
// asked and encodes; an INFO/GO ACK comes after NBD_INFO_EXPORT; LIST lists only
// allowed exports; a session's flags are coherent (HAS_FLAGS; READ_ONLY when asked).
import {
  ClientStreamDecoder,
  encodeExportNameReply,
  encodeOptionReply,
  Option,
  TransmissionFlag,
} from '../../packages/protocol/dist/index.js';
import { MemoryDevice } from '../../packages/server/dist/index.js';
import { Negotiation } from '../../packages/server/dist/negotiation.js';
import { invariant, rejecting } from './common.mjs';

const device = new MemoryDevice(1 << 20);
const exports = [
  { name: 'default', size: 1 << 20, device },
  { name: 'disk', description: 'a disk', size: 4096, device },
  { name: 'secret', size: 8192, device, tlsOnly: true },
  { name: 'bad', size: 4096, device },
];
const tlsModes = ['off', 'on', 'require', 'on'];
const identity = { protocol: 'TLSv1.3', cipher: 'fuzz', psk: 'fuzz', subject: undefined };

export async function fuzz(data) {
  if (data.length < 1) return;
  const mode = data[0];
  const readOnly = (mode & 4) !== 0;
  const open =
    mode & 8
      ? (ctx) => {
          if (ctx.export.name === 'bad') throw new Error('cannot open');
          return device;
        }
      : undefined;
  const n = new Negotiation({ exports, maxPayload: 1 << 20, readOnly, open, clientAddress: 'fuzz', tls: tlsModes[mode & 3] });
  const tls = { up: false };
  const d = new ClientStreamDecoder({ maxOptionLength: 8192 });
  d.push(data.subarray(1));
  for (;;) {
    let frame;
    if (rejecting(() => (frame = d.next())) !== undefined || frame === undefined) return;
    const step = await n.handle(frame);
    check(frame, step, readOnly, tls);
    if (step.next === 'close' || step.next === 'transmit') return;
    if (step.next === 'starttls') {
      d.drain(); // bytes after STARTTLS are dropped
      n.afterTls(identity);
      tls.up = true;
      return; // the rest would come over TLS: a new stream
    }
  }
}

function check(frame, step, readOnly, tls) {
  let sawExport = false;
  for (const m of step.send) {
    if (m.kind === 'export-name-reply') {
      invariant(frame.option === Option.EXPORT_NAME && step.next === 'transmit', 'EXPORT_NAME reply out of place');
      encodeExportNameReply(m, m.noZeroes);
      continue;
    }
    invariant(frame.kind === 'option' && m.option === frame.option, `reply for option ${m.option} to option ${frame.option}`);
    encodeOptionReply(m.option, m.reply);
    if (m.reply.kind === 'info' && m.reply.info.kind === 'export') sawExport = true;
    if (m.reply.kind === 'ack' && (m.option === Option.INFO || m.option === Option.GO))
      invariant(sawExport, 'INFO/GO ACK without NBD_INFO_EXPORT');
    if (m.reply.kind === 'server') invariant(m.reply.name !== 'secret' || tls.up, 'LIST shows a TLS-only export without TLS');
  }
  if (step.next === 'transmit') {
    const f = step.session.flags;
    invariant((f & TransmissionFlag.HAS_FLAGS) !== 0, 'flags without HAS_FLAGS');
    if (readOnly) invariant((f & TransmissionFlag.READ_ONLY) !== 0, 'read-only server, writable session');
    invariant(step.session.export.name !== 'secret' || tls.up, 'transmission on a TLS-only export without TLS');
    invariant(!step.session.extended || step.session.structured, 'extended headers without structured replies');
  }
}
