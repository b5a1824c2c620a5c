// A failed request of a copy says which end, which operation and where:
// `reading nbd+unix:///?socket=…: offset 1048576, 65536 bytes: EIO (Input/output
// error): <the server's message>`. The error keeps its class, code and fields (an
// NbdErrnoError its errno); the original is its `cause`.
import { NbdAbortError } from '@nbd/protocol';

/** What the copy was doing to which end. */
export interface Step {
  op: 'reading' | 'mapping' | 'writing' | 'zeroing' | 'finishing';
  /** The endpoint as the user named it. */
  endpoint: string;
  offset?: number;
  length?: number;
}

/** Errors that already say where they happened (a worker thread's, rebuilt here). */
const placed = new WeakSet<object>();

/** `reading SRC: offset N, M bytes` */
export function stepText(s: Step): string {
  const where = s.offset === undefined ? '' : `: offset ${s.offset}${s.length === undefined ? '' : `, ${s.length} bytes`}`;
  return `${s.op} ${s.endpoint}${where}`;
}

/**
 * `e` with `step` in front of its message, as an error of the same class with the same
 * fields (`cause`: `e`). Aborts, and errors already placed, are returned as they are.
 */
export function inContext(e: unknown, step: Step | undefined): unknown {
  if (step === undefined || !(e instanceof Error) || e instanceof NbdAbortError || placed.has(e)) return e;
  // An NbdErrnoError's message already names its errno once, with its meaning (@nbd/protocol).
  return placedError(e, `${stepText(step)}: ${e.message}`, e);
}

/**
 * A copy of `e` (its class, its own fields) with `message`; `cause` as given. Marked as
 * placed: no further context is added to it.
 */
export function placedError(e: Error, message: string, cause: unknown): Error {
  const copy = Object.create(Object.getPrototypeOf(e) as object) as Error;
  Object.assign(copy, e);
  Object.defineProperty(copy, 'message', { value: message, writable: true, configurable: true });
  Object.defineProperty(copy, 'cause', { value: cause, writable: true, configurable: true });
  const frames = (e.stack ?? '').split('\n').slice(1).join('\n');
  Object.defineProperty(copy, 'stack', {
    value: `${copy.name}: ${message}${frames ? `\n${frames}` : ''}`,
    writable: true,
    configurable: true,
  });
  placed.add(copy);
  return copy;
}

/** `e` says where it happened already. */
export function isPlaced(e: object): boolean {
  return placed.has(e);
}

/** Marks `e` as already saying where it happened. */
export function markPlaced<T extends object>(e: T): T {
  placed.add(e);
  return e;
}
