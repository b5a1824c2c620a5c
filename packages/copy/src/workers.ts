// copy({ threads }): worker threads that open both endpoints again and take chunks
// from the counter they share with this thread. Each worker reports progress in
// steps, then its zero bytes, or its error (rebuilt here as the same class, with its fields).

import { NbdSystemError } from '@nbd/node';
import {
  ErrorCode,
  NbdAbortError,
  NbdClosedError,
  NbdErrnoError,
  NbdError,
  NbdInvalidArgumentError,
  NbdOptionError,
  NbdStateError,
  NbdTimeoutError,
  NbdUnsupportedError,
  ProtocolError,
  tieToSignal,
} from '@nbd/protocol';
import type { Chunks } from './chunks.js';
import { isPlaced, markPlaced } from './context.js';
import type { CopyOptions } from './options.js';

/** What a copy worker thread gets (copy-worker.ts). */
export interface CopyWorkerData {
  src: string;
  dst: string;
  total: number;
  counter: SharedArrayBuffer;
  /** The copy's own options that a worker applies to its share. */
  opts: Pick<
    CopyOptions,
    | 'requestSize'
    | 'inFlight'
    | 'queueSize'
    | 'connections'
    | 'destinationIsZero'
    | 'sparse'
    | 'sparseSize'
    | 'extents'
    | 'allocated'
    | 'flush'
    | 'tls'
  >;
}

/** What a copy worker thread posts back. */
export type FromCopyWorker =
  | { type: 'progress'; bytes: number }
  | { type: 'done'; zeroBytes: number }
  | { type: 'error'; error: WorkerError };

/** An error as it crosses from a worker thread: its class by name, its message, stack and own fields. */
export interface WorkerError {
  name: string;
  message: string;
  stack: string | undefined;
  /** Own fields with plain values: code, errno, errnoName, offset, option, serverMessage, … */
  fields: Record<string, string | number | boolean | undefined>;
  /** It says where it happened already (context.ts). */
  placed: boolean;
}

/** The classes an error can be rebuilt as, by `name` (NbdAbortError calls itself AbortError). */
const CLASSES: Record<string, { prototype: object }> = {
  NbdError,
  NbdClosedError,
  AbortError: NbdAbortError,
  NbdTimeoutError,
  NbdInvalidArgumentError,
  NbdStateError,
  NbdUnsupportedError,
  ProtocolError,
  NbdErrnoError,
  NbdOptionError,
  NbdSystemError,
};

/** A worker's error as a message: its class, code and fields survive the thread boundary. */
export function errorMessage(e: unknown): FromCopyWorker {
  if (!(e instanceof Error))
    return { type: 'error', error: { name: 'Error', message: String(e), stack: undefined, fields: {}, placed: false } };
  const fields: WorkerError['fields'] = {};
  for (const [k, v] of Object.entries(e)) if (v === undefined || ['string', 'number', 'boolean'].includes(typeof v)) fields[k] = v as never;
  return { type: 'error', error: { name: e.name, message: e.message, stack: e.stack, fields, placed: isPlaced(e) } };
}

/** The error a worker reported, rebuilt in this thread as the same class with the same fields. */
export function rebuild(w: WorkerError): Error {
  const e = Object.create((CLASSES[w.name] ?? Error).prototype) as Error;
  Object.assign(e, w.fields);
  Object.defineProperty(e, 'message', { value: w.message, writable: true, configurable: true });
  Object.defineProperty(e, 'stack', { value: w.stack ?? `${w.name}: ${w.message}`, writable: true, configurable: true });
  return w.placed ? markPlaced(e) : e;
}

/** Starts `n` worker threads on the same copy; each settles with its zero bytes. `signal` stops them all. */
export function copyOnWorkers(
  n: number,
  data: Omit<CopyWorkerData, 'counter' | 'total'>,
  chunks: Chunks,
  signal: AbortSignal | undefined,
  progress: (n: number) => void,
): Promise<number>[] {
  const workerData: CopyWorkerData = { ...data, total: chunks.total, counter: chunks.counter.buffer as SharedArrayBuffer };
  return Array.from({ length: n }, async () => {
    // Loaded only when threads are asked for: a one-thread copy starts without it.
    const { Worker } = await import('node:worker_threads');
    const w = new Worker(new URL('./copy-worker.js', import.meta.url), { workerData });
    const untie = tieToSignal(signal, () => w.postMessage('abort'));
    try {
      return await new Promise<number>((resolve, reject) => {
        w.on('message', (m: FromCopyWorker) => {
          if (m.type === 'progress') progress(m.bytes);
          else if (m.type === 'done') resolve(m.zeroBytes);
          else reject(rebuild(m.error));
        });
        w.on('error', reject);
        w.on('exit', (code) => reject(new NbdError(ErrorCode.SYSTEM, `copy: a worker thread exited (code ${code}) before finishing`)));
      });
    } finally {
      untie();
    }
  });
}
