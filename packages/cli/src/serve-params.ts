// What the device words (serve-devices.ts, serve-remote.ts) and the filter words
// (serve-filters.ts) of `nbd serve` share: an export's `key=value` parameters, what it
// is built for, what a device word is, and the library's option errors said in those
// parameters' names.
import { DeviceOptionError } from '@nbd/devices';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { Device } from '@nbd/server';
import { intOption } from './args.js';
import { UsageError } from './errors.js';
import { parseSize } from './size.js';

/** What a device is built for. */
export interface BuildContext {
  /** Worker threads will serve it: it must be shareable (`share()`). */
  threads: number;
  readOnly: boolean;
  /** `serve` or `attach`, for error messages. */
  command: string;
  /** Registers a report to print once the devices are closed (the stats filter without a file). */
  atExit?: (report: () => void) => void;
  /** The export's filters (a device leaves the parameters of a filter in the stack to it). */
  filters?: readonly string[];
}

/** How serve-spec.ts joins the values of a parameter given more than once (argv strings hold no NUL). */
export const REPEATED = '\0';

/** The `key=value` parameters of one export; the device and each filter take the ones they know. */
export class Params {
  constructor(
    private readonly map: Map<string, string>,
    readonly command: string,
  ) {}

  /** The parameter's value (the last one, if it was given more than once). */
  take(key: string): string | undefined {
    return this.takeAll(key)?.at(-1);
  }

  /** Every value of a repeatable parameter (`header=` in nbdkit curl), in order; undefined if absent. */
  takeAll(key: string): string[] | undefined {
    const v = this.map.get(key);
    this.map.delete(key);
    return v?.split(REPEATED);
  }

  /** A boolean parameter (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`). */
  flag(key: string): boolean | undefined {
    const v = this.take(key);
    if (v === undefined) return undefined;
    if (/^(1|true|yes|on)$/i.test(v)) return true;
    if (/^(0|false|no|off)$/i.test(v)) return false;
    throw new UsageError(this.command, `${key}=${v}: expected true or false`);
  }

  /** A size parameter (`64K`, `1G`). */
  size(key: string): number | undefined {
    const v = this.take(key);
    return v === undefined ? undefined : parseSize(this.command, key, v);
  }

  /** A whole number parameter. */
  int(key: string, range: { min?: number; max?: number } = {}): number | undefined {
    return intOption(this.command, key, this.take(key), range);
  }

  /** Fails on anything left over: a parameter no device or filter knows. */
  finish(what: string): void {
    const left = [...this.map.keys()];
    if (left.length > 0)
      throw new UsageError(
        this.command,
        `unknown parameter${left.length > 1 ? 's' : ''} ${left.map((k) => `${k}=`).join(', ')} for ${what}`,
      );
  }
}

/** A device ready to serve, its size, and a description for NBD_OPT_LIST. */
export interface Built {
  device: Device;
  size: number;
  description: string;
}

/** One device word. */
export interface DeviceWord {
  /** Plain (not key=value) arguments it takes at most. */
  arity: number;
  /** `memory SIZE`: the help line. */
  usage: string;
  /** What it is, and nbdkit's equivalent. */
  summary: string;
  build(arg: string | undefined, params: Params, ctx: BuildContext): Promise<Built> | Built;
  /** The library's option names that differ from this word's parameters (`runLength` → `runlength`), for its errors. */
  names?: Record<string, string>;
}

/**
 * Runs `build` (a device word's or a filter word's); a DeviceOptionError comes out in this
 * command line's names: `runlength=0 is not …`, not `SparseRandomDevice: runLength 0 …`.
 * `names` maps the library's option names to parameters where they differ; `word` is
 * what was typed, for an error about no single option.
 */
export async function inOwnWords<T>(word: string, names: Record<string, string> | undefined, build: () => T | Promise<T>): Promise<T> {
  try {
    return await build();
  } catch (e) {
    if (!(e instanceof DeviceOptionError)) throw e;
    const why = e.option === undefined ? `${word}: ${e.reason}` : `${names?.[e.option] ?? e.option}=${String(e.value)} ${e.reason}`;
    throw new NbdInvalidArgumentError(why, { cause: e });
  }
}
