// `--filter NAME` of `nbd serve`: nbdkit's filters by name, their parameters by
// nbdkit's names (cow-block-size=, partition=, offset=, range=, …). As in nbdkit the
// first --filter is the top of the stack, the one clients talk to.
import {
  blocksize,
  type Command,
  CowFileOverlay,
  cache,
  cow,
  delay,
  type ErrorRule,
  injectErrors,
  log,
  offset,
  partition,
  rateLimit,
  readahead,
  readOnly,
  retry,
  stats,
  truncate,
} from '@nbd/devices';
import type { Device } from '@nbd/server';
import { UsageError } from './errors.js';
import { type BuildContext, inOwnWords, type Params } from './serve-params.js';

/** One filter word: its parameters (for --help) and how it wraps a device. */
export interface FilterWord {
  params: string;
  summary: string;
  apply(d: Device, p: Params, ctx: BuildContext): Device | Promise<Device>;
  /** The library's option names that differ from this word's parameters (`roundUp` → `round-up`), for its errors. */
  names?: Record<string, string>;
}

/** nbdkit's delay values: seconds, or `NNms`. */
function millis(p: Params, key: string): number | undefined {
  const v = p.take(key);
  if (v === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(v.trim());
  if (!m) throw new UsageError(p.command, `${key}=${v}: expected seconds or NNms`);
  return Math.round(Number(m[1]) * (m[2] === 'ms' ? 1 : 1000));
}

/** nbdkit's error rates: `0.1` or `10%`. */
function rate(p: Params, key: string): number | undefined {
  const v = p.take(key);
  if (v === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)(%)?$/.exec(v.trim());
  const r = m ? Number(m[1]) / (m[2] ? 100 : 1) : NaN;
  if (!(r >= 0 && r <= 1)) throw new UsageError(p.command, `${key}=${v}: expected a rate from 0 to 1, or a percentage`);
  return r;
}

const defined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

/** nbdkit's error filter's command names. */
const ERROR_COMMANDS: [string, Command][] = [
  ['pread', 'read'],
  ['pwrite', 'write'],
  ['trim', 'trim'],
  ['zero', 'zero'],
  ['flush', 'flush'],
  ['extents', 'extents'],
  ['cache', 'cache'],
];

function errorRule(p: Params, prefix: string): ErrorRule {
  return defined({
    errno: p.take(prefix)?.toUpperCase() as ErrorRule['errno'],
    rate: rate(p, `${prefix}-rate`),
    file: p.take(`${prefix}-file`),
  });
}

const FILTER_LIST: [string, FilterWord][] = [
  [
    'cow',
    {
      params: '[cow-block-size=SIZE cow-on-read=BOOL cow-on-cache=BOOL cow-file=PATH]',
      summary: 'writes go to an overlay, the device below is only read',
      apply: async (d, p) => {
        const blockSize = p.size('cow-block-size');
        const file = p.take('cow-file');
        const overlay = file !== undefined ? await CowFileOverlay.open(file, defined({ size: d.size ?? 0, blockSize })) : undefined;
        return cow(d, defined({ blockSize, onRead: p.flag('cow-on-read'), onCache: p.flag('cow-on-cache'), overlay }));
      },
      names: { blockSize: 'cow-block-size' },
    },
  ],
  [
    'partition',
    {
      params: 'partition=N',
      summary: 'one partition of an MBR or GPT disk',
      apply: (d, p) => {
        const n = p.int('partition', { min: 1 });
        if (n === undefined) throw new UsageError(p.command, '--filter partition needs partition=N');
        return partition(d, n);
      },
    },
  ],
  [
    'offset',
    {
      params: '[offset=SIZE range=SIZE]',
      summary: 'a window of the device',
      apply: (d, p) => offset(d, defined({ offset: p.size('offset'), range: p.size('range') })),
    },
  ],
  [
    'truncate',
    {
      params: 'truncate=SIZE | round-up=N | round-down=N',
      summary: 'another size: shorter, or longer with zeroes',
      apply: (d, p) => {
        const o = defined({ size: p.size('truncate'), roundUp: p.size('round-up'), roundDown: p.size('round-down') });
        if (Object.keys(o).length !== 1)
          throw new UsageError(p.command, '--filter truncate needs one of truncate=SIZE, round-up=N, round-down=N');
        return truncate(d, o);
      },
      names: { size: 'truncate', roundUp: 'round-up', roundDown: 'round-down' },
    },
  ],
  ['read-only', { params: '', summary: 'refuse writes (as -r, for one export)', apply: (d) => readOnly(d) }],
  [
    'cache',
    {
      params: '[cache-min-block-size=SIZE cache-max-size=SIZE]',
      summary: 'keep blocks read in memory (write-through)',
      apply: (d, p) => cache(d, defined({ blockSize: p.size('cache-min-block-size'), maxSize: p.size('cache-max-size') })),
      names: { blockSize: 'cache-min-block-size', maxSize: 'cache-max-size' },
    },
  ],
  [
    'readahead',
    {
      params: '[readahead-min=SIZE readahead-max=SIZE]',
      summary: 'prefetch after sequential reads',
      apply: (d, p) => readahead(d, defined({ min: p.size('readahead-min'), max: p.size('readahead-max') })),
      names: { min: 'readahead-min', max: 'readahead-max' },
    },
  ],
  [
    'blocksize',
    {
      params: '[minblock=SIZE maxdata=SIZE maxlen=SIZE]',
      summary: 'any alignment for clients: read-modify-write, split requests',
      apply: (d, p) => blocksize(d, defined({ minBlock: p.size('minblock'), maxData: p.size('maxdata'), maxLen: p.size('maxlen') })),
      names: { minBlock: 'minblock', maxData: 'maxdata', maxLen: 'maxlen' },
    },
  ],
  [
    'log',
    {
      params: '[logfile=PATH]',
      summary: 'one JSON line per request (to stderr without logfile=)',
      apply: (d, p) => {
        const file = p.take('logfile');
        return file !== undefined ? log(d, { file }) : log(d, { sink: (e) => process.stderr.write(`${JSON.stringify(e)}\n`) });
      },
    },
  ],
  [
    'stats',
    {
      params: '[statsfile=PATH]',
      summary: 'counters per command, written on exit (to stderr without statsfile=)',
      apply: (d, p, ctx) => {
        const file = p.take('statsfile');
        if (file !== undefined) return stats(d, { file });
        const counted = stats(d);
        ctx.atExit?.(() => process.stderr.write(`${JSON.stringify(counted.stats(), null, 2)}\n`));
        return counted;
      },
    },
  ],
  [
    'error',
    {
      params: '[error=ERRNO error-rate=R error-file=PATH error-pread=… error-pwrite-rate=… …]',
      summary: 'inject errors at a rate',
      apply: (d, p) => {
        const commands = Object.fromEntries(
          ERROR_COMMANDS.map(([n, c]) => [c, errorRule(p, `error-${n}`)]).filter(([, r]) => Object.keys(r as object).length > 0),
        );
        return injectErrors(d, { ...errorRule(p, 'error'), commands });
      },
      names: Object.fromEntries([
        ['errno', 'error'],
        ['rate', 'error-rate'],
        ...ERROR_COMMANDS.flatMap(([n, c]) => [
          [`commands.${c}.errno`, `error-${n}`],
          [`commands.${c}.rate`, `error-${n}-rate`],
        ]),
      ]),
    },
  ],
  [
    'delay',
    {
      params: '[rdelay=S wdelay=S delay-read=S delay-write=S delay-zero=S delay-trim=S delay-extents=S delay-cache=S delay-fast-zero=BOOL]',
      summary: 'wait before each command (S: seconds or NNms)',
      apply: (d, p) =>
        delay(
          d,
          defined({
            read: millis(p, 'rdelay') ?? millis(p, 'delay-read'),
            write: millis(p, 'wdelay') ?? millis(p, 'delay-write'),
            zero: millis(p, 'delay-zero'),
            trim: millis(p, 'delay-trim'),
            extents: millis(p, 'delay-extents'),
            cache: millis(p, 'delay-cache'),
            flush: millis(p, 'delay-flush'),
            fastZero: p.flag('delay-fast-zero'),
          }),
        ),
    },
  ],
  [
    'rate',
    {
      params: '[rate=BITS read-rate=BITS write-rate=BITS]',
      summary: 'bandwidth limit in bits per second, as nbdkit counts',
      apply: (d, p) => {
        const bits = (k: string) => {
          const v = p.size(k);
          return v === undefined ? undefined : v / 8;
        };
        const o = defined({ rate: bits('rate'), read: bits('read-rate'), write: bits('write-rate') });
        if (Object.keys(o).length === 0)
          throw new UsageError(p.command, '--filter rate needs rate=BITS, read-rate=BITS or write-rate=BITS');
        return rateLimit(d, o);
      },
      // Reported in bytes per second, as the library counts (the parameters are bits).
      names: { read: 'read-rate', write: 'write-rate' },
    },
  ],
  [
    'retry',
    {
      params: '[retries=N retry-delay=S retry-exponential=BOOL]',
      summary: 'try failed requests again after a delay',
      apply: (d, p) =>
        retry(d, defined({ retries: p.int('retries'), delay: millis(p, 'retry-delay'), exponential: p.flag('retry-exponential') })),
      names: { delay: 'retry-delay' },
    },
  ],
];

/** Every filter word, by name (`readonly` is an alias of `read-only`). */
export const FILTER_WORDS: Record<string, FilterWord> = Object.fromEntries(FILTER_LIST);
const ALIASES: Record<string, string> = { readonly: 'read-only', ro: 'read-only' };

/** Wraps `base` in `names` (top first, as nbdkit lists them), taking their parameters from `params`. */
export async function applyFilters(base: Device, names: readonly string[], params: Params, ctx: BuildContext): Promise<Device> {
  let d = base;
  for (const name of [...names].reverse()) {
    const word = FILTER_WORDS[ALIASES[name] ?? name];
    if (word === undefined)
      throw new UsageError(ctx.command, `unknown filter '${name}' (filters: ${Object.keys(FILTER_WORDS).join(', ')})`);
    const below = d;
    d = await inOwnWords(name, word.names, () => word.apply(below, params, ctx));
  }
  return d;
}
