// copy({ threads }): worker threads that open both endpoints again and take chunks
// from the counter they share with this thread. Each worker reports progress in
// steps, then its zero bytes, or its error (rebuilt here with its errno or code).
import { ErrorCode, NbdErrnoError, NbdError, tieToSignal } from '@nbd/protocol';
import type { Chunks } from './chunks.js';
import type { CopyOptions } from './copy.js';

/** What a copy worker thread gets (copy-worker.ts). */
export interface CopyWorkerData {
  src: string;
  dst: string;
  total: number;
  counter: SharedArrayBuffer;
  /** The copy's own options that a worker applies to its share. */
  opts: Pick<CopyOptions, 'requestSize' | 'inFlight' | 'connections' | 'destinationIsZero' | 'sparse' | 'extents' | 'allocated' | 'flush'>;
}

/** What a copy worker thread posts back. */
export type FromCopyWorker =
  | { type: 'progress'; bytes: number }
  | { type: 'done'; zeroBytes: number }
  | { type: 'error'; message: string; errno?: number; nbdCode?: string; code?: string };

/** A worker's error as a message (an NbdError keeps its kind, an NbdErrnoError its errno, a Node error its code). */
export function errorMessage(e: unknown): FromCopyWorker {
  const err = e as Error & { code?: unknown };
  if (err instanceof NbdErrnoError) return { type: 'error', message: err.message, errno: err.errno };
  if (err instanceof NbdError) return { type: 'error', message: err.message, nbdCode: err.code };
  return { type: 'error', message: String(err?.message ?? e), code: typeof err?.code === 'string' ? err.code : undefined };
}

/** The error a worker reported, rebuilt in this thread. */
function rebuild(m: Extract<FromCopyWorker, { type: 'error' }>): Error {
  if (m.errno !== undefined) return new NbdErrnoError(m.errno, m.message.replace(/^E[A-Z]+: /, ''));
  if (m.nbdCode !== undefined) return new NbdError(m.nbdCode as ErrorCode, m.message);
  return Object.assign(new Error(m.message), { code: m.code });
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
          else reject(rebuild(m));
        });
        w.on('error', reject);
        w.on('exit', (code) => reject(new NbdError(ErrorCode.SYSTEM, `copy: a worker thread exited (code ${code}) before finishing`)));
      });
    } finally {
      untie();
    }
  });
}
