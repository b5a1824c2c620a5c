// What one failed HTTP attempt means, and the loop that acts on it: try again after
// an exponential backoff (5xx, 408, 429, resets, timeouts, short bodies), resolve the
// URL again first (a redirect's target that moved or expired), or give up at once (a
// reply that does not match the request, a changed file). Retries end at a count and
// at a deadline; what finally fails is EIO with the last attempt's message.
import { abortError, Errno, NbdAbortError, NbdErrnoError, NbdError } from '@nbd/protocol';
import { sleep } from '../filters/intercept.js';

/** What to do after a failed attempt. */
export type Next = 'retry' | 'resolve' | 'fail';

/** One failed attempt: the message the caller will read, and what to do next. */
export class HttpAttemptError extends Error {
  override name = 'HttpAttemptError';
  constructor(
    message: string,
    readonly next: Next,
    options?: { cause?: unknown; retryAfter?: number },
  ) {
    super(message, options);
    this.retryAfter = options?.retryAfter;
  }
  /** Milliseconds the server asked to wait (Retry-After); 0 for a kept-alive connection found closed (retried at once, once). */
  readonly retryAfter: number | undefined;
}

/** How retries go. */
export interface RetryPolicy {
  retries: number;
  retryDelay: number;
  retryDeadline: number;
}

/** The longest single wait between attempts. */
const MAX_WAIT = 8000;

/**
 * Runs `attempt` until it succeeds, the policy's retries or deadline run out, or a
 * failure says not to go on. `resolve` is called before an attempt that follows a
 * `resolve` failure (and the next attempt counts as a retry).
 */
export async function withRetries<T>(
  policy: RetryPolicy,
  signal: AbortSignal | undefined,
  attempt: () => Promise<T>,
  resolve: () => Promise<void>,
): Promise<T> {
  const deadline = Date.now() + policy.retryDeadline;
  let delay = policy.retryDelay;
  for (let done = 0; ; done++) {
    try {
      return await attempt();
    } catch (e) {
      if (e instanceof NbdAbortError || signal?.aborted) throw e instanceof NbdAbortError ? e : abortError(signal, 'an HTTP request');
      if (e instanceof NbdError) throw e; // already says what it is (a server without byte ranges)
      const failure = e instanceof HttpAttemptError ? e : new HttpAttemptError(String((e as Error)?.message ?? e), 'fail', { cause: e });
      // retryAfter 0 is a stale kept-alive connection (no wait, once); else the server's Retry-After or the backoff.
      const stale = failure.retryAfter === 0 && done === 0;
      const waitMs = failure.next === 'resolve' || stale ? 0 : Math.min(Math.max(delay, failure.retryAfter ?? 0), MAX_WAIT);
      const outOfTime = Date.now() + waitMs > deadline;
      if (failure.next === 'fail' || done >= policy.retries || outOfTime) {
        const tries = done + 1;
        const why =
          failure.next === 'fail' || tries === 1 ? '' : ` (after ${tries} attempts${outOfTime ? ', retry deadline reached' : ''})`;
        throw new NbdErrnoError(Errno.EIO, `${failure.message}${why}`, { cause: failure.cause ?? failure });
      }
      if (failure.next === 'resolve') await resolve();
      else if (!stale) {
        await sleep(waitMs, signal, 'an HTTP retry wait');
        delay = Math.min(delay * 2, MAX_WAIT);
      }
    }
  }
}
