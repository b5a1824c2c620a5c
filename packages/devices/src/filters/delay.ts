// nbdkit's delay filter: each command waits a while before it reaches the device
// below (a slow or remote disk). The wait ends early if the connection goes away.
import { after, Errno, NbdErrnoError } from '@nbd/protocol';
import type { Device } from '@nbd/server';
import { type Command, intercept, sleep } from './intercept.js';
import { checkCount } from './layer.js';

/** Options of {@link delay}: milliseconds per command (default 0). */
export type DelayOptions = Partial<Record<Command, number>> & {
  /** Fast zero requests wait too (default true); false: they fail with ENOTSUP at once (nbdkit's delay-fast-zero=false). */
  fastZero?: boolean;
};

/** `base` with its commands delayed. */
export function delay(base: Device, opts: DelayOptions): Device {
  const { fastZero = true, ...ms } = opts;
  for (const [k, v] of Object.entries(ms)) checkCount('delay', k, v);
  return intercept(base, 'delay', opts, (call, next) => {
    if (call.command === 'zero' && call.opts.fast && !fastZero)
      throw new NbdErrnoError(Errno.ENOTSUP, 'delay: fast zero refused without waiting');
    const wait = ms[call.command] ?? 0;
    return wait > 0 ? after(sleep(wait, call.opts.signal), next) : next();
  });
}
