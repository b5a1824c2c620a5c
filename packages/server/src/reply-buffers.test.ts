// READ reply buffers: one owner at a time, and the writer ends each lease once the
// socket is done with it (reused after a write, never after a failed one).

import type { Transport } from '@nbd/protocol';
import { expect, test } from 'vitest';
import { ReplyBuffers } from './reply-buffers.js';
import { ReplyWriter } from './reply-writer.js';

test('a lease ends once: a second release does not free its buffer twice', () => {
  const buffers = new ReplyBuffers(1 << 20);
  const a = buffers.lease(16, 64 * 1024);
  expect([a.whole.length, a.data.length, a.data.byteOffset - a.whole.byteOffset, a.pooled]).toEqual([16 + 65536, 65536, 16, true]);
  a.release();
  a.release();
  expect(buffers.freeBytes).toBe(16 + 65536);
  const b = buffers.lease(16, 64 * 1024);
  const c = buffers.lease(16, 64 * 1024);
  expect(b.whole.buffer).toBe(a.whole.buffer); // reused
  expect(c.whole.buffer).not.toBe(b.whole.buffer); // not handed out twice
  c.abandon();
  c.release();
  expect(buffers.freeBytes).toBe(0); // an abandoned buffer never comes back
});

test('small leases come from the slab and are not pooled', () => {
  const buffers = new ReplyBuffers(1 << 20);
  const small = buffers.lease(16, 512);
  expect(small.pooled).toBe(false);
  small.release();
  expect([small.out, buffers.freeBytes]).toEqual([false, 0]);
});

/** A transport that holds write callbacks until `finish(ok)`. */
function transport() {
  const pending: ((err?: Error) => void)[] = [];
  const t = {
    closed: false,
    writableLength: 0,
    write: (_b: Uint8Array, done?: (err?: Error) => void) => void (done && pending.push(done)),
    cork() {},
    uncork() {},
  } as unknown as Transport;
  return { t, finish: (err?: Error) => pending.shift()!(err) };
}

test('the writer ends a sent lease when its write finishes: released and reported, or abandoned on failure', () => {
  const { t, finish } = transport();
  let written = 0;
  const writer = new ReplyWriter(t, { structured: false, extended: false }, () => written++);
  const ok = writer.readLease(64 * 1024);
  const failed = writer.readLease(64 * 1024);
  writer.send({ kind: 'data', cookie: 1n, offset: 0n, lease: ok });
  writer.send({ kind: 'data', cookie: 2n, offset: 0n, lease: failed });
  expect([ok.out, failed.out]).toEqual([true, true]); // the transport may still read them
  expect(ok.whole.readUInt32BE(0)).toBe(0x67446698); // the simple reply's head in front of the data
  finish();
  finish(new Error('EPIPE'));
  expect([ok.out, failed.out, written]).toEqual([false, false, 1]);
});
