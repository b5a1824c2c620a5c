// nbdkit's stats filter: per command, how many calls, bytes, errors and how long
// they took, as JSON. The counters are in a SharedArrayBuffer, so worker threads
// sharing the device add to the same numbers the main thread reads.
import { writeFile } from 'node:fs/promises';
import { isSharedArrayBuffer } from 'node:util/types';
import { after } from '@nbd/protocol';
import type { Device } from '@nbd/server';
import { type Call, COMMANDS, type Command, intercept } from './intercept.js';
import { stackError } from './layer.js';

/** Counters of one command. */
export interface CommandStats {
  ops: number;
  bytes: number;
  errors: number;
  /** Time spent in the device below, summed over calls. */
  seconds: number;
  /** Mean and longest call, in milliseconds. */
  meanMs: number;
  maxMs: number;
}

/** What {@link StatsDevice.stats} returns (JSON-ready). */
export interface StatsSnapshot {
  /** Seconds since the filter was built. */
  elapsed: number;
  total: { ops: number; bytes: number; errors: number };
  commands: Record<Command, CommandStats>;
}

/** Options of {@link stats}. */
export interface StatsOptions {
  /** Write the JSON here when the device is closed (nbdkit's statsfile). */
  file?: string;
  /** Internal (worker threads): the counters of the same filter in another thread. */
  counters?: SharedArrayBuffer;
}

/** A device with statistics. */
export type StatsDevice = Device & {
  /** The counters now. */
  stats(): StatsSnapshot;
};

// Per command: ops, bytes, errors, nanoseconds, max nanoseconds.
const FIELDS = 5;

/** `base` with per-command counters; `stats()` reads them. */
export function stats(base: Device, opts: StatsOptions = {}): StatsDevice {
  const bytesLength = COMMANDS.length * FIELDS * 8 + 8;
  if (opts.counters !== undefined && (!isSharedArrayBuffer(opts.counters) || opts.counters.byteLength !== bytesLength))
    throw stackError('stats', 'bad shared counters');
  const buffer = opts.counters ?? new SharedArrayBuffer(bytesLength);
  const c = new BigInt64Array(buffer);
  const START = COMMANDS.length * FIELDS;
  if (opts.counters === undefined) c[START] = process.hrtime.bigint();
  const slot = (cmd: Command) => COMMANDS.indexOf(cmd) * FIELDS;
  const count = (call: Call, ns: bigint, failed: boolean) => {
    const i = slot(call.command);
    Atomics.add(c, i, 1n);
    Atomics.add(c, i + 1, BigInt(call.length));
    if (failed) Atomics.add(c, i + 2, 1n);
    Atomics.add(c, i + 3, ns);
    for (let max = Atomics.load(c, i + 4); ns > max; max = Atomics.load(c, i + 4)) {
      if (Atomics.compareExchange(c, i + 4, max, ns) === max) break;
    }
  };
  const snapshot = (): StatsSnapshot => {
    const commands = {} as Record<Command, CommandStats>;
    const total = { ops: 0, bytes: 0, errors: 0 };
    for (const cmd of COMMANDS) {
      const i = slot(cmd);
      const [ops, bytes, errors, ns, max] = [0, 1, 2, 3, 4].map((k) => Number(Atomics.load(c, i + k)));
      commands[cmd] = {
        ops: ops!,
        bytes: bytes!,
        errors: errors!,
        seconds: ns! / 1e9,
        meanMs: ops! > 0 ? ns! / ops! / 1e6 : 0,
        maxMs: max! / 1e6,
      };
      total.ops += ops!;
      total.bytes += bytes!;
      total.errors += errors!;
    }
    return { elapsed: Number(process.hrtime.bigint() - Atomics.load(c, START)) / 1e9, total, commands };
  };
  const options = { file: opts.file, counters: buffer };
  const dev = intercept(
    base,
    'stats',
    options,
    (call, next) => {
      const t0 = process.hrtime.bigint();
      let r;
      try {
        r = next();
      } catch (e) {
        count(call, process.hrtime.bigint() - t0, true);
        throw e;
      }
      return after(
        r,
        (v) => {
          count(call, process.hrtime.bigint() - t0, false);
          return v;
        },
        (e) => {
          count(call, process.hrtime.bigint() - t0, true);
          throw e;
        },
      );
    },
    {
      seeLend: (call) => count(call, 0n, false),
      close: opts.file === undefined ? undefined : () => writeFile(opts.file!, `${JSON.stringify(snapshot(), null, 2)}\n`),
    },
  );
  return Object.assign(dev, { stats: snapshot });
}
