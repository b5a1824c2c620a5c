// Requests awaiting their replies: cookie → pending entry. Each entry settles
// exactly once: by its reply, by the connection failing, or by its caller's signal.
// An aborted request stays in the table (its reply is still coming and must be
// read) but is settled already: the reply is checked and dropped, and what the
// request held (a caller's buffer, an arena view) is let go at the abort.
import { abortError, tieToSignal } from '@nbd/protocol';
import type { ReplyState } from './reply-state.js';

/** One request on the wire. */
export interface PendingRequest {
  readonly cookie: number;
  /** What its reply has brought so far. */
  readonly reply: ReplyState;
  /** A WRITE's (or BLOCK_STATUS's) payload, the caller's bytes until they are written. */
  readonly payload: Uint8Array | undefined;
  /** The caller has its answer (or gave up): nothing reaches it any more. */
  settled: boolean;
  /** The reply is done and fine: the caller gets its result (typed where the request was made). */
  complete(): void;
  reject(error: unknown): void;
  /** Stops listening to the caller's signal. */
  untie(): void;
}

/** The requests of one connection awaiting replies, by cookie. */
export class RequestTable {
  private readonly pending = new Map<number, PendingRequest>();
  private nextCookie = 1;
  private idle: PromiseWithResolvers<void> | undefined;
  /** A caller gave up on `p` (its signal aborted): let go of what its reply holds. */
  onAbandon: ((p: PendingRequest) => void) | undefined;

  /** Requests sent and not yet answered (abandoned ones included: their replies are due). */
  get size(): number {
    return this.pending.size;
  }

  /**
   * Registers a request under a fresh cookie: `complete` gives its caller the result
   * (typed where the request was made), `reject` its error. `signal` is tied once
   * through tieToSignal (one listener per signal, however many requests share it); it
   * must not have aborted already (check before sending anything).
   */
  add(
    reply: ReplyState,
    complete: () => void,
    reject: (error: unknown) => void,
    signal: AbortSignal | undefined,
    what: string,
    payload: Uint8Array | undefined,
  ): number {
    const cookie = this.nextCookie++;
    const p: PendingRequest = { cookie, reply, payload, settled: false, complete, reject, untie: noop };
    this.pending.set(cookie, p);
    if (signal !== undefined) {
      p.untie = tieToSignal(signal, () => {
        if (p.settled) return;
        p.settled = true;
        reject(abortError(signal, what));
        this.onAbandon?.(p);
      });
    }
    return cookie;
  }

  get(cookie: number): PendingRequest | undefined {
    return this.pending.get(cookie);
  }

  /**
   * The reply of `p` is complete: it leaves the table. True when its caller still
   * waits, and is now the caller's to complete or reject; false when it gave up.
   */
  finish(p: PendingRequest): boolean {
    this.pending.delete(p.cookie);
    p.untie();
    if (this.pending.size === 0) this.wake();
    if (p.settled) return false;
    p.settled = true;
    return true;
  }

  /** The connection failed: every request leaves, each caller still waiting rejects with `error`. */
  failAll(error: Error): PendingRequest[] {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      p.untie();
      if (!p.settled) {
        p.settled = true;
        p.reject(error);
      }
    }
    this.wake();
    return all;
  }

  /** Resolves once no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    this.idle ??= Promise.withResolvers<void>();
    return this.idle.promise;
  }

  private wake(): void {
    const idle = this.idle;
    this.idle = undefined;
    idle?.resolve();
  }
}

function noop(): void {}
