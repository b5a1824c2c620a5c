// nbdkit's log filter: one line per call, as JSON (one object per line): when it
// finished, which command, where, how long it took, and its error if it failed.
// To a file (appended, shareable with worker threads) or to a function.
import { createWriteStream, type WriteStream } from 'node:fs';
import { after, Errno, nameOf, toNbdErrno } from '@nbd/protocol';
import type { Device } from '@nbd/server';
import { type Call, type Command, intercept } from './intercept.js';
import { stackError } from './layer.js';

/** One logged call. */
export interface LogEntry {
  /** When the call finished (ISO 8601). */
  time: string;
  /** Counts calls through this filter (per thread), from 1. */
  id: number;
  command: Command;
  offset: number;
  length: number;
  /** The flags that were set: fua, noHole, fast, reqOne. */
  flags: string[];
  /** How long the device below took, in milliseconds. */
  ms: number;
  /** The errno name the client gets ("EIO"), when the call failed. */
  error?: string;
}

/** Options of {@link log}: where entries go (one of them). */
export interface LogOptions {
  /** Append JSON lines to this file. */
  file?: string;
  /** Called with each entry (not shareable with worker threads). */
  sink?: (entry: LogEntry) => void;
}

const FLAGS = ['fua', 'noHole', 'fast', 'reqOne'] as const;

/** `base` with every call logged. */
export function log(base: Device, opts: LogOptions): Device {
  if ((opts.file === undefined) === (opts.sink === undefined)) throw stackError('log', 'give exactly one of file, sink');
  let stream: WriteStream | undefined;
  const sink =
    opts.sink ??
    ((e: LogEntry) => {
      stream ??= createWriteStream(opts.file!, { flags: 'a' });
      stream.write(`${JSON.stringify(e)}\n`);
    });
  let id = 0;
  const emit = (call: Call, t0: number, err?: unknown) => {
    const entry: LogEntry = {
      time: new Date().toISOString(),
      id: ++id,
      command: call.command,
      offset: call.offset,
      length: call.length,
      flags: FLAGS.filter((f) => call.opts[f] === true),
      ms: Math.round((performance.now() - t0) * 1000) / 1000,
    };
    if (err !== undefined) entry.error = nameOf(Errno, toNbdErrno(err));
    sink(entry);
  };
  const close = () =>
    new Promise<void>((resolve) => {
      if (stream === undefined) resolve();
      else stream.end(resolve);
    });
  return intercept(
    base,
    'log',
    opts.file === undefined ? undefined : { file: opts.file },
    (call, next) => {
      const t0 = performance.now();
      let r;
      try {
        r = next();
      } catch (e) {
        emit(call, t0, e);
        throw e;
      }
      return after(
        r,
        (v) => {
          emit(call, t0);
          return v;
        },
        (e) => {
          emit(call, t0, e);
          throw e;
        },
      );
    },
    { seeLend: (call) => emit(call, performance.now()), close },
  );
}
