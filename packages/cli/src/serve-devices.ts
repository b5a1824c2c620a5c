// The device words of `nbd serve` (and `nbd attach`), nbdkit's plugins by name:
// each builds a Device from its plain argument and nbdkit-style parameters. A
// parameter nothing takes is a usage error, as in nbdkit.
import { DataDevice, NullDevice, PatternDevice, RandomDevice, SparseMemoryDevice, SparseRandomDevice, ZeroDevice } from '@nbd/devices';
import { MemoryDevice, SharedMemoryDevice } from '@nbd/server';
import { UsageError } from './errors.js';
import { applyFilters } from './serve-filters.js';
import { buildImage, QCOW2_WORD } from './serve-images.js';
import { type BuildContext, type Built, type DeviceWord, inOwnWords, Params } from './serve-params.js';
import { CURL_WORD, HTTP_WORD } from './serve-remote.js';
import type { Arity, ExportSpec } from './serve-spec.js';
import { sizeArg } from './serve-spec.js';

/** The size of a source: its argument or size=, required or defaulting to `fallback`. */
function sizeOf(word: string, arg: string | undefined, params: Params, fallback?: number): number {
  const text = arg ?? params.take('size');
  if (text === undefined && fallback !== undefined) return fallback;
  return sizeArg(word, text);
}

const DEVICE_LIST: [string, DeviceWord][] = [
  [
    'memory',
    {
      arity: 1,
      usage: 'memory SIZE',
      summary: 'RAM, lost on exit (nbdkit memory)',
      build: (arg, params, ctx) => {
        const size = sizeOf('memory', arg, params);
        // Worker threads need one memory every thread sees.
        const device = ctx.threads > 0 ? new SharedMemoryDevice(size) : new MemoryDevice(size);
        return { device, size, description: `memory, ${size} bytes` };
      },
    },
  ],
  [
    'sparse-memory',
    {
      arity: 1,
      usage: 'sparse-memory SIZE',
      summary: 'RAM that trims give back to the system (one thread)',
      build: (arg, params) => {
        const size = sizeOf('sparse-memory', arg, params);
        return { device: new SparseMemoryDevice(size), size, description: `sparse memory, ${size} bytes` };
      },
    },
  ],
  [
    'file',
    {
      arity: 1,
      usage: 'file PATH [direct=true] [format=raw|qcow2|auto]',
      summary: 'a file or block device (nbdkit file); format=qcow2: the image inside',
      build: async (arg, params, ctx) => {
        const path = arg ?? params.take('file');
        if (path === undefined) throw new UsageError(ctx.command, 'file needs a PATH');
        return buildImage(path, params, ctx);
      },
    },
  ],
  ['qcow2', QCOW2_WORD],
  [
    'null',
    {
      arity: 1,
      usage: 'null [SIZE]',
      summary: 'reads zeroes, writes vanish (nbdkit null)',
      build: (arg, params) => {
        const size = sizeOf('null', arg, params, 0);
        return { device: new NullDevice(size), size, description: `null, ${size} bytes` };
      },
    },
  ],
  [
    'zero',
    {
      arity: 1,
      usage: 'zero [SIZE]',
      summary: 'zeroes, read-only (nbdkit zero)',
      build: (arg, params) => {
        const size = sizeOf('zero', arg, params, 0);
        return { device: new ZeroDevice(size), size, description: `zero, ${size} bytes` };
      },
    },
  ],
  [
    'pattern',
    {
      arity: 1,
      usage: 'pattern SIZE',
      summary: 'each 8-byte word holds its offset, read-only (nbdkit pattern)',
      build: (arg, params) => {
        const size = sizeOf('pattern', arg, params);
        return { device: new PatternDevice(size), size, description: `pattern, ${size} bytes` };
      },
    },
  ],
  [
    'random',
    {
      arity: 1,
      usage: 'random SIZE [seed=N]',
      summary: "nbdkit random's bytes for a seed",
      build: (arg, params) => {
        const size = sizeOf('random', arg, params);
        const seed = params.int('seed', { max: 2 ** 32 - 1 });
        return { device: new RandomDevice(size, seed !== undefined ? { seed } : {}), size, description: `random, ${size} bytes` };
      },
    },
  ],
  [
    'sparse-random',
    {
      arity: 1,
      usage: 'sparse-random SIZE [seed=N percent=P runlength=SIZE random-content=BOOL]',
      summary: "nbdkit sparse-random's map and bytes for a seed",
      build: (arg, params) => {
        const size = sizeOf('sparse-random', arg, params);
        const opts = {
          seed: params.int('seed', { max: 2 ** 32 - 1 }),
          percent: params.int('percent', { max: 100 }),
          runLength: params.size('runlength'),
          randomContent: params.flag('random-content'),
        };
        const defined = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined));
        return { device: new SparseRandomDevice(size, defined), size, description: `sparse-random, ${size} bytes` };
      },
      names: { runLength: 'runlength', randomContent: 'random-content' },
    },
  ],
  [
    'data',
    {
      arity: 1,
      usage: "data 'DATA' [size=SIZE]",
      summary: "nbdkit data's format (also raw=BYTES, base64=TEXT)",
      build: (arg, params, ctx) => {
        const raw = params.take('raw');
        const base64 = params.take('base64');
        const text = arg ?? params.take('data');
        const given = [text, raw, base64].filter((x) => x !== undefined).length;
        if (given !== 1) throw new UsageError(ctx.command, "data needs exactly one of: 'DATA', raw=BYTES, base64=TEXT");
        const spec = text ?? (raw !== undefined ? new TextEncoder().encode(raw) : Uint8Array.from(Buffer.from(base64!, 'base64')));
        const size = params.size('size');
        // Read-only data is shareable with worker threads; writable data lives in one thread.
        const device = new DataDevice(spec, { readOnly: ctx.readOnly || ctx.threads > 0, ...(size !== undefined ? { size } : {}) });
        return { device, size: device.size, description: `data, ${device.size} bytes` };
      },
    },
  ],
  ['http', HTTP_WORD],
  ['curl', CURL_WORD],
];

/** Every device word, by name. */
export const DEVICE_WORDS: Record<string, DeviceWord> = Object.fromEntries(DEVICE_LIST);

/** The arity table the command line parser needs. */
export function arityOf(words: Record<string, DeviceWord> = DEVICE_WORDS): Arity {
  return Object.fromEntries(Object.entries(words).map(([k, w]) => [k, w.arity]));
}

/** Builds the device of one export, with its filters, from what was typed. */
export async function buildExport(spec: ExportSpec, ctx: BuildContext): Promise<Built> {
  const word = DEVICE_WORDS[spec.device!]!;
  const params = new Params(new Map(spec.params), ctx.command);
  let built = await inOwnWords(spec.device!, word.names, () => word.build(spec.args[0], params, { ...ctx, filters: spec.filters }));
  try {
    const device = await applyFilters(built.device, spec.filters, params, ctx);
    built = { device, size: device.size ?? built.size, description: built.description };
    params.finish(`${spec.device}${spec.filters.length > 0 ? ` and its filters (${spec.filters.join(', ')})` : ''}`);
    if (ctx.threads > 0 && typeof built.device.share !== 'function') {
      throw new UsageError(
        ctx.command,
        `${[...spec.filters, spec.device].join(' over ')} cannot be shared with worker threads (serve without --threads)`,
      );
    }
  } catch (e) {
    await built.device.close?.();
    throw e;
  }
  return built;
}
