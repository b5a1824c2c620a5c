// What every filter is built from: `layer(base, spec, parts)` makes a Device whose
// methods are exactly the ones the filter gives (none inherited by accident: a
// filter that moves offsets cannot forget one), whose properties default to the
// base's, whose close() closes the base after the filter, and whose share() exists
// only when the base can be shared and the filter has plain options to rebuild
// itself in a worker thread (the recipe names the whole filter chain).
import type { BlockSizes } from '@nbd/protocol';
import type { Device, DeviceExtent, DeviceRecipe, ExtentList, MaybePromise } from '@nbd/server';
import { DeviceOptionError } from '../option-error.js';

/** One filter of a chain, as a worker thread rebuilds it: its name and structured-cloneable options. */
export interface FilterStep {
  filter: string;
  options: unknown;
}

/** The recipe args of a filtered device: the bottom device's recipe and the filters over it, bottom first. */
export interface StackArgs {
  base: DeviceRecipe;
  chain: FilterStep[];
}

/** The module whose openDevice(StackArgs) rebuilds a chain in a worker thread. */
export const STACK_MODULE = new URL('./open-stack.js', import.meta.url).href;

/** What a filter gives `layer`: its own methods, and the properties it changes. */
export type LayerParts = Pick<Device, 'readAt'> &
  Partial<Pick<Device, 'lend' | 'writeAt' | 'sync' | 'trim' | 'zero' | 'cache' | 'extents'>> &
  Partial<Record<'size' | 'readOnly' | 'rotational' | 'multiConn' | 'fua', number | boolean | undefined>> & {
    blockSizes?: BlockSizes | undefined;
    /** Runs before the base is closed. */
    close?: () => MaybePromise<void>;
  };

const METHODS = ['lend', 'writeAt', 'sync', 'trim', 'zero', 'cache', 'extents'] as const;
const PROPERTIES = ['size', 'readOnly', 'rotational', 'multiConn', 'fua', 'blockSizes'] as const;

/** The recipe of `step` over a base whose recipe is `below` (chains are flattened). */
export function stackRecipe(below: DeviceRecipe, step: FilterStep): DeviceRecipe {
  if (below.module === STACK_MODULE) {
    const a = below.args as StackArgs;
    return { module: STACK_MODULE, args: { base: a.base, chain: [...a.chain, step] } satisfies StackArgs };
  }
  return { module: STACK_MODULE, args: { base: below, chain: [step] } satisfies StackArgs };
}

/**
 * A filter's device over `base`. `options` rebuilds the filter in a worker thread
 * (undefined: this layer cannot be shared, e.g. it holds a callback or JS memory).
 */
export function layer(base: Device, filter: string, options: unknown, parts: LayerParts): Device {
  const dev: Record<string, unknown> = { readAt: parts.readAt };
  for (const m of METHODS) if (parts[m] !== undefined) dev[m] = parts[m];
  for (const p of PROPERTIES) {
    const v = p in parts ? parts[p] : base[p];
    if (v !== undefined) dev[p] = v;
  }
  const baseShare = base.share?.bind(base);
  if (baseShare !== undefined && options !== undefined) dev.share = (): DeviceRecipe => stackRecipe(baseShare(), { filter, options });
  dev.close = async (): Promise<void> => {
    try {
      await parts.close?.();
    } finally {
      await base.close?.();
    }
  };
  return dev as unknown as Device;
}

/**
 * A filter refused its options or the device below it, when the stack was built: a
 * {@link DeviceOptionError} whose `device` is the filter (`round-up=` on a command line:
 * `option` and `value` name the option as the API spells it, `roundUp` and 3).
 */
export class FilterError extends DeviceOptionError {
  /** `'FilterError'`, as shown in stack traces. */
  override name = 'FilterError';
  /** The filter, as its function is named (`offset`, `inject-errors`, …). */
  readonly filter: string;

  constructor(filter: string, reason: string, at?: { option: string; value: unknown }) {
    super(filter, reason, at);
    this.filter = filter;
  }
}

/** A build-time error of a filter stack: `filter: why`. */
export function stackError(filter: string, why: string): FilterError {
  return new FilterError(filter, why);
}

/** A build-time error about one option: `filter: option value why`. */
export function optionError(filter: string, option: string, value: unknown, why: string): FilterError {
  return new FilterError(filter, why, { option, value });
}

/** The base's size, or a build-time error: most filters need to know it. */
export function sizeOf(base: Device, filter: string): number {
  if (base.size === undefined) throw stackError(filter, 'the device below has no size');
  return base.size;
}

/** The base's block sizes with the spec's defaults (min 1, preferred 4096, max unlimited). */
export function limitsOf(base: Device): BlockSizes {
  const b = base.blockSizes;
  return { min: b?.min ?? 1, preferred: b?.preferred ?? 4096, max: b?.max ?? 0xffffffff };
}

/**
 * Adds `extents`, the device below's answer for a range starting at `offset`, to
 * `list`: clipped to the list's range and to `end`, up to a bad extent or until the
 * list wants no more. Returns where the added answer stopped (≤ `end`): a filter pads
 * from there when the device below answered short.
 */
export function addExtents(list: ExtentList, offset: number, extents: readonly DeviceExtent[], end = Number.POSITIVE_INFINITY): number {
  let at = offset;
  for (const e of extents) {
    const n = Math.min(e.length, end - at);
    if (!(n > 0) || !Number.isSafeInteger(n)) break;
    const more = list.add(at, n, e.flags);
    at += n;
    if (!more) break;
  }
  return at;
}

/** A safe integer ≥ 0 option, or a build-time error naming it. */
export function checkCount(filter: string, name: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw optionError(filter, name, n, 'is not a whole number ≥ 0');
  return n;
}
