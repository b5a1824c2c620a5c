// nbdkit's error filter: calls fail on purpose, at a rate, per command, with the
// errno a client should see, optionally only while a trigger file exists.
import { existsSync } from 'node:fs';
import { Errno, NbdErrnoError } from '@nbd/protocol';
import type { Device } from '@nbd/server';
import { Xoshiro256 } from '../sources/prng.js';
import { COMMANDS, type Command, intercept } from './intercept.js';
import { optionError } from './layer.js';

/** An NBD errno by name ('EIO', 'ENOSPC', …) or number. */
export type ErrnoLike = keyof typeof Errno | number;

/** When and how calls fail. */
export interface ErrorRule {
  /** Probability of failing a call, 0..1 (default 0). */
  rate?: number;
  /** The errno (default EIO). */
  errno?: ErrnoLike;
  /** Fail only while this file exists (nbdkit's error-file). */
  file?: string;
}

/** Options of {@link injectErrors}: a rule for every command, and rules per command that replace it. */
export interface InjectErrorsOptions extends ErrorRule {
  commands?: Partial<Record<Command, ErrorRule>>;
  /** Seed for the choice of calls that fail (default: random). */
  seed?: number;
}

function errnoOf(e: ErrnoLike | undefined, option: string): number {
  if (e === undefined) return Errno.EIO;
  const n = typeof e === 'number' ? e : Errno[e];
  if (!Object.values(Errno).includes(n as never))
    throw optionError('inject-errors', option, e, `is not an NBD errno (${Object.keys(Errno).join(', ')})`);
  return n;
}

/** `base` whose calls fail as the rules say. */
export function injectErrors(base: Device, opts: InjectErrorsOptions): Device {
  const rules = new Map<Command, { rate: number; errno: number; file: string | undefined }>();
  for (const cmd of COMMANDS) {
    const own = opts.commands?.[cmd];
    const r = { ...opts, ...own };
    // The option at fault, as the caller wrote it: the command's own rule, or the common one.
    const at = (k: keyof ErrorRule) => (own?.[k] !== undefined ? `commands.${cmd}.${k}` : k);
    const rate = r.rate ?? 0;
    if (!(rate >= 0 && rate <= 1)) throw optionError('inject-errors', at('rate'), rate, 'is not within 0..1');
    rules.set(cmd, { rate, errno: errnoOf(r.errno, at('errno')), file: r.file });
  }
  const rng = new Xoshiro256(opts.seed ?? Math.floor(Math.random() * 2 ** 32));
  const options = { ...opts, seed: opts.seed };
  return intercept(base, 'inject-errors', options, (call, next) => {
    const r = rules.get(call.command)!;
    if (r.rate > 0 && (r.file === undefined || existsSync(r.file)) && rng.nextDouble() / 2 ** 64 < r.rate) {
      throw new NbdErrnoError(r.errno, `injected error (${call.command} at ${call.offset})`);
    }
    return next();
  });
}
