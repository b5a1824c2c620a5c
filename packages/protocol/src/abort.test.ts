import { getEventListeners } from 'node:events';
import { describe, expect, test, vi } from 'vitest';
import { abortError, raceSignal, tieToSignal } from './abort.js';
import { ErrorCode, NbdAbortError } from './errors.js';

describe('tieToSignal', () => {
  test('one listener per signal however many items are tied to it', () => {
    const ac = new AbortController();
    const seen: number[] = [];
    const unties = Array.from({ length: 50 }, (_, i) => tieToSignal(ac.signal, () => seen.push(i)));
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    unties[3]!();
    ac.abort(new Error('stop'));
    expect(seen).toHaveLength(49);
    expect(seen).not.toContain(3);
  });

  test('an already aborted signal calls back at once; no signal is a no-op', () => {
    const fn = vi.fn();
    tieToSignal(AbortSignal.abort('why'), fn);
    expect(fn).toHaveBeenCalledWith('why');
    expect(tieToSignal(undefined, fn)).toBeTypeOf('function');
  });

  test('each tie fires once, and not after untie', () => {
    const ac = new AbortController();
    const fn = vi.fn();
    const untie = tieToSignal(ac.signal, fn);
    untie();
    ac.abort();
    expect(fn).not.toHaveBeenCalled();
  });
});

describe('raceSignal', () => {
  test('rejects with an NbdAbortError whose cause is the reason', async () => {
    const ac = new AbortController();
    const p = raceSignal(new Promise(() => {}), ac.signal, 'reading');
    const reason = new Error('user gave up');
    ac.abort(reason);
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdAbortError);
    expect((err as NbdAbortError).code).toBe(ErrorCode.ABORTED);
    expect((err as NbdAbortError).cause).toBe(reason);
    expect((err as Error).message).toBe('reading was aborted');
  });

  test('settles with the promise and unties', async () => {
    const ac = new AbortController();
    await expect(raceSignal(Promise.resolve(5), ac.signal)).resolves.toBe(5);
    expect(abortError(undefined).code).toBe(ErrorCode.ABORTED);
  });
});
