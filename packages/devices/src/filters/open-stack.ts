// The worker-thread side of a filtered device's share(): the recipe names the
// bottom device's recipe and the filter chain over it; each filter is rebuilt by
// name from its options (SharedArrayBuffers in them are the very state the main
// thread's filters use: cow blocks, locks, counters, rate buckets).
import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { Device, DeviceRecipe, MaybePromise } from '@nbd/server';
import { blocksize } from './blocksize.js';
import { cowFromRecipe } from './cow.js';
import { delay } from './delay.js';
import { injectErrors } from './inject-errors.js';
import type { StackArgs } from './layer.js';
import { log } from './log.js';
import { offset } from './offset.js';
import { partition } from './partition.js';
import { rateLimit } from './rate-limit.js';
import { readOnly } from './read-only.js';
import { readahead } from './readahead.js';
import { retry } from './retry.js';
import { stats } from './stats.js';
import { truncate } from './truncate.js';

// Options arrive as the filter's own share() put them (structured clones); each
// entry hands them back to the filter that made them.
// biome-ignore lint/suspicious/noExplicitAny: each filter reads back the options its own share() wrote
type Options = any;
type Rebuild = (base: Device, options: Options, open: typeof openRecipe) => MaybePromise<Device>;

/** Every shareable filter, by the name it gives `layer`. */
const FILTERS: Record<string, Rebuild> = {
  offset: (b, o) => offset(b, o),
  partition: (b, o) => partition(b, o.partition),
  truncate: (b, o) => truncate(b, o),
  'read-only': (b) => readOnly(b),
  cow: (b, o, open) => cowFromRecipe(b, o, open),
  readahead: (b, o) => readahead(b, o),
  blocksize: (b, o) => blocksize(b, o),
  log: (b, o) => log(b, o),
  stats: (b, o) => stats(b, o),
  'inject-errors': (b, o) => injectErrors(b, o),
  delay: (b, o) => delay(b, o),
  'rate-limit': (b, o) => rateLimit(b, o),
  retry: (b, o) => retry(b, o),
};

/** Imports a recipe's module and calls its openDevice(args). */
export async function openRecipe(recipe: unknown): Promise<unknown> {
  const r = recipe as DeviceRecipe;
  const mod = (await import(r.module)) as { openDevice?: (args: unknown) => unknown };
  if (typeof mod.openDevice !== 'function') throw new NbdInvalidArgumentError(`${r.module} exports no openDevice()`);
  return mod.openDevice(r.args);
}

/** Rebuilds a filtered device from its share() args: the bottom device, then each filter over it. */
export async function openDevice(args: unknown): Promise<Device> {
  const a = args as StackArgs;
  let dev = (await openRecipe(a.base)) as Device;
  try {
    for (const step of a.chain) {
      const rebuild = FILTERS[step.filter];
      if (rebuild === undefined) throw new NbdInvalidArgumentError(`open-stack: unknown filter "${step.filter}"`);
      dev = await rebuild(dev, step.options, openRecipe);
    }
  } catch (e) {
    await dev.close?.();
    throw e;
  }
  return dev;
}
