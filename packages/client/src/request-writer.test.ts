// The request writer over a fake transport: what leaves, in which writes, when.

import { ClientStreamDecoder, Command, type Transport } from '@nbd/protocol';
import { describe, expect, test } from 'vitest';
import { HIGH_WATER, RequestWriter } from './request-writer.js';

/** A transport that records each write (and whether it was corked) and can hold a queue. */
function fakeTransport() {
  const writes: { bytes: Uint8Array; corked: boolean }[] = [];
  let corked = false;
  const t = {
    peer: { address: 'fake' },
    read: () => {},
    pause: () => {},
    resume: () => {},
    rebuffer: () => {},
    write: (bytes: Uint8Array) => void writes.push({ bytes, corked }),
    cork: () => void (corked = true),
    uncork: () => void (corked = false),
    writableLength: 0,
    needsDrain: false,
    onDrain: undefined as (() => void) | undefined,
    onClose: undefined,
    ended: false,
    end: () => void (t.ended = true),
    destroy: () => {},
    closed: false,
  };
  return { t, writes };
}

const turn = () => new Promise<void>((r) => setImmediate(r));
const header = (cookie: number, type: number = Command.READ) => ({ flags: 0, type, cookie, offset: cookie * 512, length: 512 });

/** The requests in the bytes written, as a server reads them. */
function requests(writes: { bytes: Uint8Array }[]) {
  const d = new ClientStreamDecoder();
  d.startTransmission(false);
  for (const w of writes) d.push(w.bytes);
  const out = [];
  for (let f = d.next(); f; f = d.next()) if (f.kind === 'request') out.push({ cookie: Number(f.request.cookie), payload: f.payload });
  return out;
}

describe('RequestWriter', () => {
  test('the headers of one event-loop turn leave as one chunk; payloads are passed on, not copied', async () => {
    const { t, writes } = fakeTransport();
    const w = new RequestWriter(t as unknown as Transport, false, () => 0);
    const payload = new Uint8Array(512).fill(7);
    w.send(header(1));
    w.send(header(2));
    w.send({ ...header(3, Command.WRITE) }, payload);
    w.send(header(4));
    expect(writes).toHaveLength(0); // nothing before the turn ends
    await turn();
    expect(writes.map((x) => x.bytes.length)).toEqual([3 * 28, 512, 28]); // the WRITE header ends the first run
    expect(writes.every((x) => x.corked)).toBe(true);
    expect(writes[1]!.bytes).toBe(payload);
    expect(requests(writes).map((r) => r.cookie)).toEqual([1, 2, 3, 4]);
  });

  test('with 8 or more on the wire, a lone request waits for 4 to gather, or for a reply', async () => {
    const { t, writes } = fakeTransport();
    let inFlight = 10;
    const w = new RequestWriter(t as unknown as Transport, false, () => inFlight);
    w.send(header(1));
    await turn();
    expect(writes).toHaveLength(0); // held: 9 others are on the wire
    inFlight = 5;
    w.replied();
    await turn();
    expect(requests(writes).map((r) => r.cookie)).toEqual([1]);
    inFlight = 14;
    for (let c = 2; c <= 5; c++) w.send(header(c));
    await turn();
    expect(requests(writes).map((r) => r.cookie)).toEqual([1, 2, 3, 4, 5]); // 4 gathered: they go
  });

  test('past the high-water mark, requests wait for the drain', async () => {
    const { t, writes } = fakeTransport();
    const w = new RequestWriter(t as unknown as Transport, false, () => 0);
    t.writableLength = HIGH_WATER + 1;
    t.needsDrain = true;
    w.send(header(1));
    await turn();
    expect(writes).toHaveLength(0);
    expect(w.empty).toBe(false);
    t.writableLength = 0;
    t.needsDrain = false;
    t.onDrain!();
    expect(requests(writes).map((r) => r.cookie)).toEqual([1]);
    expect(w.empty).toBe(true);
  });

  test.each([
    ['a Uint8Array', (n: number) => new Uint8Array(n)],
    ['a Buffer (whose slice() is a view, not a copy)', (n: number) => Buffer.alloc(n)],
  ])('a payload still staged when its request is aborted leaves as a copy; DISC then end: %s', async (_kind, alloc) => {
    const { t, writes } = fakeTransport();
    const w = new RequestWriter(t as unknown as Transport, false, () => 0);
    const payload = alloc(512).fill(1);
    w.send(header(1, Command.WRITE), payload);
    w.unshare(payload);
    payload.fill(2); // the caller reuses its buffer at once
    w.send({ flags: 0, type: Command.DISC, cookie: 0, offset: 0, length: 0 });
    w.endAfterFlush();
    await turn();
    const sent = requests(writes);
    expect([...sent[0]!.payload!].every((b) => b === 1)).toBe(true);
    expect(t.ended).toBe(true);
  });

  test('after clear() nothing is written', async () => {
    const { t, writes } = fakeTransport();
    const w = new RequestWriter(t as unknown as Transport, true, () => 0);
    w.send(header(1));
    w.clear();
    w.send(header(2));
    await turn();
    expect(writes).toHaveLength(0);
  });
});
