// The client's reply assembly: requests (decoded from the first part of the input)
// are answered by the reply stream in the second part, framed by ServerStreamDecoder
// and assembled by reply-assembler.ts. Input: mode byte (1: structured replies,
// 2: extended headers, 4: strict off), u16 length of the request stream, the
// requests (as a client sends them), the replies. Oracles: only ProtocolError may be
// thrown; a successful READ gives exactly the bytes asked for, from data chunks and
// holes only (checked against what the chunks said); block status extents start at
// the request, are contiguous and nonzero, within the rules strict mode promises;
// arena views held are given back unless handed to the caller.

import { assembleChunk, assembleSimple, simpleReplyPayload } from '../../packages/client/dist/reply-assembler.js';
import { ClientStreamDecoder, Command, CommandFlag, NbdErrnoError, ServerStreamDecoder } from '../../packages/protocol/dist/index.js';
import { invariant, rejecting, replyStateFor } from './common.mjs';

export function fuzz(data) {
  if (data.length < 3) return;
  const mode = data[0];
  const rules = { structured: (mode & 3) !== 0, extended: (mode & 2) !== 0, strict: (mode & 4) === 0 };
  const split = Math.min(3 + ((data[1] << 8) | data[2]), data.length);
  const states = requests(data.subarray(3, split), rules.extended);
  if (states.size === 0) return;
  // Which request holds each view: others may still hold theirs when one finishes.
  const held = new Map();
  let current;
  const views = {
    hold: (v) => held.set(v, current),
    release: (v) => invariant(held.delete(v), 'released a view never held'),
  };
  const d = new ServerStreamDecoder({ maxChunk: 1 << 20 });
  d.startTransmission(rules.extended);
  d.readLength = (c) => {
    const st = states.get(c);
    return st === undefined ? undefined : simpleReplyPayload(rules, st);
  };
  d.push(data.subarray(split));
  rejecting(() => {
    for (let f = d.next(); f !== undefined; f = d.next()) {
      const c = f.kind === 'chunk' ? f.header.cookie : f.cookie;
      const st = states.get(c);
      if (st === undefined) return; // the connection treats an unknown cookie as a protocol error
      current = st;
      const outcome =
        f.kind === 'chunk' ? assembleChunk(rules, st, f.header, f.payload, views) : assembleSimple(rules, st, f.error, f.data, views);
      if (outcome === undefined) continue;
      states.delete(c);
      checkOutcome(rules, st, outcome, held);
    }
  });
}

/** Request states by cookie, from a client's request stream (later duplicates ignored). */
function requests(bytes, extended) {
  const dec = new ClientStreamDecoder({ maxPayload: 1 << 20 });
  dec.startTransmission(extended, 1 << 20);
  dec.push(bytes);
  const states = new Map();
  rejecting(() => {
    for (let f = dec.next(); f !== undefined && states.size < 64; f = dec.next()) {
      const r = f.request;
      if (states.has(r.cookie) || r.offset > BigInt(2 ** 50) || r.length > 1n << 20n) continue;
      const contextIds = r.type === Command.BLOCK_STATUS ? [1, 2].slice(0, 1 + (r.flags & 0x40 ? 1 : 0)) : [];
      states.set(
        r.cookie,
        replyStateFor({ command: r.type, offset: Number(r.offset), length: Number(r.length), flags: r.flags, contextIds }),
      );
    }
  });
  return states;
}

/** How many views `st` still holds. */
const heldBy = (held, st) => [...held.values()].filter((owner) => owner === st).length;

function checkOutcome(rules, st, outcome, held) {
  if (!outcome.ok) {
    invariant(outcome.error instanceof NbdErrnoError && outcome.error.errno !== 0, 'failure without an errno');
    invariant(heldBy(held, st) === 0, 'a failed reply kept an arena view');
    return;
  }
  // What the connection hands its caller (transmission.ts): a READ's single view (held
  // until taken) or its assembled buffer; BLOCK_STATUS's extents by context.
  let value;
  if (st.command === Command.READ) {
    const single = st.single;
    st.single = undefined;
    if (single !== undefined) {
      invariant(held.get(single) === st, 'the handed-on view is not the one held');
      held.delete(single);
    }
    value = single ?? st.dest;
  } else if (st.command === Command.BLOCK_STATUS) value = st.extents;
  invariant(heldBy(held, st) === 0, 'a finished reply kept an arena view');
  if (st.command === Command.READ) {
    invariant(value instanceof Uint8Array && value.length === st.length, `READ of ${st.length} bytes gave ${value?.length}`);
    invariant(st.error === undefined, 'READ succeeded with an error recorded');
  } else if (st.command === Command.BLOCK_STATUS) {
    for (const [id, list] of value) {
      invariant(st.contextIds.includes(id), `extents for context ${id}, not asked about`);
      let at = st.offset;
      for (const e of list) {
        invariant(e.offset === at && e.length > 0, `extent ${e.offset}+${e.length} not contiguous from ${at}`);
        at += e.length;
      }
      if (rules.strict) {
        invariant(list.length > 0, 'strict: a context without extents');
        if (list.length > 1)
          invariant(at - list[list.length - 1].length - st.offset < st.length, 'strict: the first extents cover the whole request');
        if (st.flags & CommandFlag.REQ_ONE) invariant(list.length === 1 && list[0].length <= st.length, 'strict: REQ_ONE answered by more');
      }
    }
  } else {
    invariant(value === undefined, 'a value for a command without one');
  }
}
