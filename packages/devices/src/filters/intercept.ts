// Filters that watch or shape calls without changing what they do (log, stats,
// error injection, delay, rate limit, retry) are one function around every call:
// `intercept(base, name, options, around)` gives each method the base has a wrapper
// that hands `around` a description of the call and the call itself.
import { abortError, tieToSignal } from '@nbd/protocol';
import type { Device, IoOptions, MaybePromise, ZeroOptions } from '@nbd/server';
import { layer } from './layer.js';

/** The device calls, named as nbdkit's log filter names NBD commands. */
export type Command = 'read' | 'write' | 'flush' | 'trim' | 'zero' | 'cache' | 'extents';

/** Every command, in a fixed order (for stats and options). */
export const COMMANDS: readonly Command[] = ['read', 'write', 'flush', 'trim', 'zero', 'cache', 'extents'];

/** One device call as an interceptor sees it. */
export interface Call {
  command: Command;
  offset: number;
  /** Bytes the call covers (0 for flush). */
  length: number;
  /** The options the server passed (fua, signal; for zero also noHole and fast; for extents reqOne). */
  opts: IoOptions & Partial<ZeroOptions> & { reqOne?: boolean };
}

/** Runs `next()` (the call on the device below) as the filter sees fit, and returns what it returns. */
export type Around = (call: Call, next: () => MaybePromise<unknown>) => MaybePromise<unknown>;

/**
 * `base` with every call going through `around`. `target()` is the device the calls
 * reach (the base, or what a retry reopened). `lend` passes through only when the
 * interceptor says it can see reads that way (`seeLend`, synchronous watchers).
 */
export function intercept(
  base: Device,
  filter: string,
  options: unknown,
  around: Around,
  extra: { target?: () => Device; seeLend?: (call: Call) => void; close?: () => MaybePromise<void> } = {},
): Device {
  const t = extra.target ?? (() => base);
  const run = <T>(command: Command, offset: number, length: number, opts: Call['opts'], next: () => MaybePromise<T>): MaybePromise<T> =>
    around({ command, offset, length, opts }, next) as MaybePromise<T>;
  const seeLend = extra.seeLend;
  return layer(base, filter, options, {
    readAt: (buf, at, o) => run('read', at, buf.length, o, () => t().readAt(buf, at, o)),
    lend:
      base.lend && seeLend
        ? (at, n) => {
            const loan = t().lend?.(at, n);
            if (loan !== undefined) seeLend({ command: 'read', offset: at, length: n, opts: { fua: false, signal: NEVER } });
            return loan;
          }
        : undefined,
    writeAt: base.writeAt && ((buf, at, o) => run('write', at, buf.length, o, () => t().writeAt!(buf, at, o))),
    sync: base.sync && ((o) => run('flush', 0, 0, o, () => t().sync!(o))),
    trim: base.trim && ((at, n, o) => run('trim', at, n, o, () => t().trim!(at, n, o))),
    zero: base.zero && ((at, n, o) => run('zero', at, n, o, () => t().zero!(at, n, o))),
    cache: base.cache && ((at, n, o) => run('cache', at, n, o, () => t().cache!(at, n, o))),
    extents: base.extents && ((at, n, o) => run('extents', at, n, o, () => t().extents!(at, n, o))),
    close: extra.close,
  });
}

const NEVER = new AbortController().signal;

/** Resolves after `ms`, or rejects with an abort error (naming `what`) as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal, what = 'a filter delay'): Promise<void> {
  if (ms <= 0 && !signal?.aborted) return Promise.resolve();
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const timer = setTimeout(() => {
    untie();
    resolve();
  }, ms);
  const untie = tieToSignal(signal, () => {
    clearTimeout(timer);
    reject(abortError(signal, what));
  });
  return promise;
}
