// nbdkit's retry and retry-request filters: a failed call is tried again after a
// delay (doubling each time by default), optionally on a reopened device below
// (`reopen`: a reconnected network device, say). Errors that would fail again
// the same way (EINVAL, EPERM, ENOSPC, ENOTSUP) and aborts are not retried.
import { Errno, isPromise, NbdAbortError, NbdErrnoError } from '@nbd/protocol';
import type { Device, MaybePromise } from '@nbd/server';
import { intercept, sleep } from './intercept.js';
import { checkCount } from './layer.js';

/** Options of {@link retry}. */
export interface RetryOptions {
  /** Attempts after the first (default 5). */
  retries?: number;
  /** Milliseconds before the first retry (default 2000, as nbdkit). */
  delay?: number;
  /** Double the delay after each retry (default true). */
  exponential?: boolean;
  /** Replaces the device below after a failure (a replaced device is closed, the first one when this filter is); not shareable with worker threads. */
  reopen?: (failed: Device) => MaybePromise<Device>;
  /** Which errors are worth retrying (default: I/O errors, shutdowns, out of memory, and errors that carry no NBD errno). */
  retryOn?: (err: unknown) => boolean;
}

const PERMANENT = new Set<number>([Errno.EINVAL, Errno.EPERM, Errno.ENOSPC, Errno.ENOTSUP, Errno.EOVERFLOW]);

/** The default of {@link RetryOptions.retryOn}. */
export function isTransient(err: unknown): boolean {
  if (err instanceof NbdAbortError) return false;
  if (err instanceof NbdErrnoError) return !PERMANENT.has(err.errno);
  return true;
}

/** `base` whose failed calls are retried. */
export function retry(base: Device, opts: RetryOptions = {}): Device {
  const retries = checkCount('retry', 'retries', opts.retries ?? 5);
  const first = checkCount('retry', 'delay', opts.delay ?? 2000);
  const retryOn = opts.retryOn ?? isTransient;
  let current = base;
  let reopening: Promise<void> | undefined;
  const reopenAfter = async (failed: Device): Promise<void> => {
    if (opts.reopen === undefined || current !== failed) return;
    reopening ??= (async () => {
      const next = await opts.reopen!(failed);
      current = next;
      // The first device is closed with this filter (by layer); later ones here.
      if (failed !== base) await failed.close?.();
    })().finally(() => (reopening = undefined));
    await reopening;
  };
  const shareable =
    opts.reopen === undefined && opts.retryOn === undefined ? { retries, delay: first, exponential: opts.exponential } : undefined;
  return intercept(
    base,
    'retry',
    shareable,
    (call, next) => {
      const again = async (err: unknown, done: number, wait: number, failed: Device): Promise<unknown> => {
        if (done >= retries || !retryOn(err) || call.opts.signal.aborted) throw err;
        await sleep(wait, call.opts.signal);
        await reopenAfter(failed);
        return attempt(done + 1, opts.exponential === false ? wait : wait * 2);
      };
      const attempt = (done: number, wait: number): MaybePromise<unknown> => {
        const dev = current;
        try {
          const r = next();
          return isPromise(r) ? r.catch((e: unknown) => again(e, done, wait, dev)) : r;
        } catch (e) {
          return again(e, done, wait, dev);
        }
      };
      return attempt(0, first);
    },
    { target: () => current, close: () => (current !== base ? current.close?.() : undefined) },
  );
}
