// The request table with plain values: cookies, settling once, aborts tied through
// one listener per signal, failing everything at once.

import { Command, NbdAbortError, NbdClosedError } from '@nbd/protocol';
import { describe, expect, test, vi } from 'vitest';
import { plainReply } from './reply-state.js';
import { RequestTable } from './request-table.js';

const reply = () => plainReply(Command.FLUSH, 0, 0, 0);

/** Adds a request as Transmission.submit does: its promise resolves with `result()` once completed. */
function addRequest<T>(t: RequestTable, result: () => T, what: string, signal?: AbortSignal) {
  const { promise, resolve, reject } = Promise.withResolvers<T>();
  const cookie = t.add(reply(), () => resolve(result()), reject, signal, what, undefined);
  return { cookie, promise };
}
const nothing = () => undefined;

describe('RequestTable', () => {
  test('fresh cookies; finish hands the caller its answer once; idle when empty', async () => {
    const t = new RequestTable();
    const a = addRequest(t, () => 'a', 'flush');
    const b = addRequest(t, nothing, 'flush');
    expect(b.cookie).toBe(a.cookie + 1);
    expect(t.size).toBe(2);
    const idle = t.whenIdle();
    const pa = t.get(a.cookie)!;
    expect(t.finish(pa)).toBe(true);
    pa.complete();
    expect(t.get(a.cookie)).toBeUndefined();
    expect(t.finish(pa)).toBe(false); // never twice
    await expect(a.promise).resolves.toBe('a');
    t.finish(t.get(b.cookie)!);
    await idle;
    expect(t.size).toBe(0);
  });

  test('an abort rejects at once with NbdAbortError (cause: the reason); the entry waits for its reply, which is dropped', async () => {
    const t = new RequestTable();
    const abandoned: number[] = [];
    t.onAbandon = (p) => abandoned.push(p.cookie);
    const ac = new AbortController();
    const r = addRequest(t, nothing, 'read', ac.signal);
    const reason = new Error('enough');
    ac.abort(reason);
    const err = await r.promise.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdAbortError);
    expect(err).toMatchObject({ message: 'read was aborted', cause: reason });
    expect(abandoned).toEqual([r.cookie]);
    expect(t.size).toBe(1); // its reply is still due
    expect(t.finish(t.get(r.cookie)!)).toBe(false);
    expect(t.size).toBe(0);
  });

  test('one listener per signal however many requests share it; removed once they settle', () => {
    const t = new RequestTable();
    const ac = new AbortController();
    const add = vi.spyOn(ac.signal, 'addEventListener');
    const all = Array.from({ length: 200 }, () => addRequest(t, nothing, 'read', ac.signal));
    expect(add).toHaveBeenCalledTimes(1);
    for (const r of all) t.finish(t.get(r.cookie)!);
    ac.abort(); // nothing pending: nobody is rejected
    expect(t.size).toBe(0);
  });

  test('failAll rejects every caller still waiting, once, and empties the table', async () => {
    const t = new RequestTable();
    const ac = new AbortController();
    const a = addRequest(t, nothing, 'flush', ac.signal);
    const b = addRequest(t, nothing, 'flush');
    ac.abort();
    const err = new NbdClosedError('gone');
    expect(t.failAll(err).map((p) => p.cookie)).toEqual([a.cookie, b.cookie]);
    await expect(a.promise).rejects.toBeInstanceOf(NbdAbortError); // settled first by its abort
    await expect(b.promise).rejects.toBe(err);
    expect(t.size).toBe(0);
    await t.whenIdle();
  });
});
