// A stack in one line: `await stack(file, (d) => partition(d, 1), cow, readOnly)`.
import type { Device, MaybePromise } from '@nbd/server';

/** One layer of a stack: a filter applied to the device below (`cow`, or `(d) => offset(d, { offset: 4096 })`). */
export type Filter = (device: Device) => MaybePromise<Device>;

/**
 * Applies `filters` to `base`, bottom first. A layer that does not fit the one
 * below throws here, while the stack is built. On failure nothing is closed: the
 * caller still owns `base`. (Filters that read while they are built take their
 * own signal: `(d) => partition(d, 1, { signal })`.)
 */
export async function stack(base: MaybePromise<Device>, ...filters: Filter[]): Promise<Device> {
  let dev = await base;
  for (const f of filters) dev = await f(dev);
  return dev;
}
