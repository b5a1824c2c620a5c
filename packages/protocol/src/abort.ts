// The one place that ties an AbortSignal to pending work. However many requests
// or connections wait on one signal, the signal gets a single listener, so a
// shared signal never trips Node's MaxListenersExceededWarning (undici's
// lib/api/abort-signal.js and Node's addAbortListener follow the same idea).
import { NbdAbortError } from './errors.js';

type OnAbort = (reason: unknown) => void;

/** Per signal: the work waiting on it. The signal's one listener walks this set. */
const waiting = new WeakMap<AbortSignal, Set<OnAbort>>();

function fire(signal: AbortSignal): void {
  const set = waiting.get(signal);
  if (set === undefined) return;
  waiting.delete(signal);
  for (const onAbort of set) onAbort(signal.reason);
}

/**
 * Calls `onAbort(signal.reason)` once if `signal` aborts before the returned
 * `untie()` is called; call `untie()` when the work settles. A signal that has
 * already aborted calls `onAbort` at once (synchronously). No signal: a no-op.
 */
export function tieToSignal(signal: AbortSignal | undefined, onAbort: OnAbort): () => void {
  if (signal === undefined) return noop;
  if (signal.aborted) {
    onAbort(signal.reason);
    return noop;
  }
  let set = waiting.get(signal);
  if (set === undefined) {
    set = new Set();
    waiting.set(signal, set);
    signal.addEventListener('abort', () => fire(signal), { once: true });
  }
  // A fresh function per tie, so the same callback tied twice is untied once each.
  const entry: OnAbort = (reason) => onAbort(reason);
  set.add(entry);
  const mine = set;
  return () => {
    mine.delete(entry);
  };
}

/** The error an aborted call rejects with: `code` NBD_ERR_ABORTED, `cause` the signal's reason. */
export function abortError(signal: AbortSignal | undefined, what = 'the operation'): NbdAbortError {
  return new NbdAbortError(`${what} was aborted`, { cause: signal?.reason });
}

/** Throws {@link abortError} if `signal` has aborted. */
export function throwIfAborted(signal: AbortSignal | undefined, what?: string): void {
  if (signal?.aborted) throw abortError(signal, what);
}

/** `promise`, or a rejection with {@link abortError} as soon as `signal` aborts. */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal | undefined, what?: string): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(abortError(signal, what));
  const { promise: out, resolve, reject } = Promise.withResolvers<T>();
  const untie = tieToSignal(signal, () => reject(abortError(signal, what)));
  promise.then(
    (v) => {
      untie();
      resolve(v);
    },
    (e: unknown) => {
      untie();
      reject(e);
    },
  );
  return out;
}

function noop(): void {}
