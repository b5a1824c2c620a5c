// nbdkit's rate filter: READ and WRITE bandwidth limits, each a bucket that lets a
// burst through after a quiet spell. The bucket is one 64-bit "theoretical arrival
// time" (GCRA) in a SharedArrayBuffer, updated with compare-and-swap, so every
// connection and every worker thread shares one limit.
import { isSharedArrayBuffer } from 'node:util/types';
import { after } from '@nbd/protocol';
import type { Device } from '@nbd/server';
import { intercept, sleep } from './intercept.js';
import { optionError, stackError } from './layer.js';

/** Options of {@link rateLimit}: bytes per second (nbdkit counts bits). */
export interface RateLimitOptions {
  /** Both directions, each on its own (nbdkit's rate=). */
  rate?: number;
  /** Reads (server to client). */
  read?: number;
  /** Writes (client to server). */
  write?: number;
  /** How long a burst after a quiet spell may run at full speed, in seconds (default 2, nbdkit's burstiness). */
  burst?: number;
  /** Internal (worker threads): the buckets of the same filter in another thread. */
  buckets?: SharedArrayBuffer;
}

/** Takes `bytes` from bucket `i`: how many nanoseconds to wait before sending them. */
function take(tat: BigInt64Array, i: number, bytes: number, rate: number, burstNs: bigint): bigint {
  const cost = BigInt(Math.ceil((bytes * 1e9) / rate));
  for (;;) {
    const now = process.hrtime.bigint();
    const old = Atomics.load(tat, i);
    // biome-ignore lint/complexity/useMathMinMax: bigints (Math.max takes numbers only)
    const start = old > now ? old : now;
    if (Atomics.compareExchange(tat, i, old, start + cost) === old) {
      const wait = start + cost - now - burstNs;
      return wait > 0n ? wait : 0n;
    }
  }
}

/** `base` with its read and write bandwidth limited. */
export function rateLimit(base: Device, opts: RateLimitOptions): Device {
  const limits = [opts.read ?? opts.rate, opts.write ?? opts.rate];
  for (const k of ['rate', 'read', 'write'] as const) {
    const l = opts[k];
    if (l !== undefined && !(l > 0)) throw optionError('rate-limit', k, l, 'must be more than 0 bytes per second');
  }
  if (limits.every((l) => l === undefined)) throw stackError('rate-limit', 'give rate, read or write');
  const burst = opts.burst ?? 2;
  if (!(burst >= 0)) throw optionError('rate-limit', 'burst', burst, 'must be ≥ 0 seconds');
  if (opts.buckets !== undefined && (!isSharedArrayBuffer(opts.buckets) || opts.buckets.byteLength !== 16))
    throw stackError('rate-limit', 'bad shared buckets');
  const buckets = opts.buckets ?? new SharedArrayBuffer(16);
  const tat = new BigInt64Array(buckets);
  const burstNs = BigInt(Math.round(burst * 1e9));
  return intercept(base, 'rate-limit', { ...opts, buckets }, (call, next) => {
    const i = call.command === 'read' ? 0 : call.command === 'write' ? 1 : -1;
    const rate = i < 0 ? undefined : limits[i];
    if (rate === undefined) return next();
    const wait = take(tat, i, call.length, rate, burstNs);
    return wait > 0n ? after(sleep(Number(wait / 1000000n), call.opts.signal), next) : next();
  });
}
