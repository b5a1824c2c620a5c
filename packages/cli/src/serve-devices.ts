// The device words of `nbd serve` (and `nbd attach`): each builds a Device from its
// arguments and nbdkit-style parameters. A parameter nothing takes is a usage error,
// as in nbdkit.
import { type Device, FileDevice, MemoryDevice, SharedMemoryDevice } from '@nbd/server';
import { UsageError } from './errors.js';
import type { Arity, ExportSpec } from './serve-spec.js';
import { sizeArg } from './serve-spec.js';

/** What a device is built for. */
export interface BuildContext {
  /** Worker threads will serve it: it must be shareable (`share()`). */
  threads: number;
  readOnly: boolean;
  /** `serve` or `attach`, for error messages. */
  command: string;
}

/** A device ready to serve, its size, and a description for NBD_OPT_LIST. */
export interface Built {
  device: Device;
  size: number;
  description: string;
}

/** The `key=value` parameters of one export; each builder takes the ones it knows. */
export class Params {
  constructor(
    private readonly map: Map<string, string>,
    private readonly command: string,
  ) {}

  take(key: string): string | undefined {
    const v = this.map.get(key);
    this.map.delete(key);
    return v;
  }

  /** A boolean parameter (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`). */
  flag(key: string): boolean | undefined {
    const v = this.take(key);
    if (v === undefined) return undefined;
    if (/^(1|true|yes|on)$/i.test(v)) return true;
    if (/^(0|false|no|off)$/i.test(v)) return false;
    throw new UsageError(this.command, `${key}=${v}: expected true or false`);
  }

  /** Fails on anything left over: a parameter no device or filter knows. */
  finish(what: string): void {
    const left = [...this.map.keys()];
    if (left.length > 0) throw new UsageError(this.command, `unknown parameter${left.length > 1 ? 's' : ''} ${left.map((k) => `${k}=`).join(', ')} for ${what}`);
  }
}

/** One device word. */
export interface DeviceWord {
  /** Plain (not key=value) arguments it takes at most. */
  arity: number;
  /** `memory SIZE`: the help line. */
  usage: string;
  /** What it is, and nbdkit's equivalent. */
  summary: string;
  build(args: string[], params: Params, ctx: BuildContext): Promise<Built>;
}

const memory: DeviceWord = {
  arity: 1,
  usage: 'memory SIZE',
  summary: 'sparse RAM, lost on exit (nbdkit memory)',
  build: async (args, params, ctx) => {
    const size = sizeArg('memory', args[0] ?? params.take('size'));
    // Worker threads need one memory every thread sees.
    const device = ctx.threads > 0 ? new SharedMemoryDevice(size) : new MemoryDevice(size);
    return { device, size, description: `memory, ${size} bytes` };
  },
};

const file: DeviceWord = {
  arity: 1,
  usage: 'file PATH',
  summary: 'a file or block device (nbdkit file)',
  build: async (args, params, ctx) => {
    const path = args[0] ?? params.take('file');
    if (path === undefined) throw new UsageError(ctx.command, 'file needs a PATH');
    const device = await FileDevice.open(path, { readOnly: ctx.readOnly });
    return { device, size: device.size, description: path };
  },
};

/** Every device word, by name. */
export const DEVICE_WORDS: Record<string, DeviceWord> = { memory, file };

/** The arity table the command line parser needs. */
export function arityOf(words: Record<string, DeviceWord> = DEVICE_WORDS): Arity {
  return Object.fromEntries(Object.entries(words).map(([k, w]) => [k, w.arity]));
}

/** Builds the device of one export (with its filters) from what was typed. */
export async function buildExport(spec: ExportSpec, ctx: BuildContext): Promise<Built> {
  const word = DEVICE_WORDS[spec.device!]!;
  const params = new Params(new Map(spec.params), ctx.command);
  if (spec.filters.length > 0) throw new UsageError(ctx.command, `--filter ${spec.filters[0]}: filters are not available yet`);
  const built = await word.build(spec.args, params, ctx);
  try {
    params.finish(`${spec.device}`);
  } catch (e) {
    await built.device.close?.();
    throw e;
  }
  return built;
}
