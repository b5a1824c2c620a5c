// One client connection: a transport, its read arenas and request decoder, and
// the two engines (negotiation, then transmission), driven through the state union
// of connection-state.ts (its diagram there). In transmission each WRITE payload goes
// to the engine as a lease on its arena, and one budget says whether to read on.

import { NodeTransport, trimWhenQuiet } from '@nbd/node';
import { ArenaPool, type ClientFrame, ClientStreamDecoder, encodeGreeting, isPromise, ReadArenas, type Transport } from '@nbd/protocol';
import { Budget } from './budget.js';
import {
  type ConnectionLimits,
  type ConnectionTls,
  type Phase,
  type Start,
  type State,
  type Transmit,
  transitions,
} from './connection-state.js';
import type { Device } from './device.js';
import type { Logger } from './logger.js';
import { encodeServerMessage, type NegotiationStep } from './negotiation.js';
import { ReplyWriter } from './reply-writer.js';
import type { Session } from './session.js';
import { TransmissionEngine } from './transmission-engine.js';

/**
 * Read arenas of every server connection on this thread: 4 KiB while quiet, 4 MiB when
 * busy; beyond 256 MiB of large arenas out at once, busy connections get 256 KiB ones.
 */
const arenaPool = new ArenaPool(
  { smallSize: 4 * 1024, largeSize: 4 * 1024 * 1024, maxRead: 1024 * 1024, minRead: 64 * 1024, spares: 4, budget: 256 * 1024 * 1024 },
  (size) => Buffer.allocUnsafeSlow(size),
);

/**
 * Grace for a client to read our last replies and close after we ended our side, and for
 * device calls still running once the transport has closed.
 */
const CLOSE_GRACE_MS = 5000;

export class ServerConnection {
  private state: State = { phase: 'new' };
  private readonly decoder: ClientStreamDecoder;
  private readonly arenas: ReadArenas;
  private paused = true;
  private parsing = false;
  /** An option handler is still running (an `open` hook): later frames wait. */
  private busy = false;
  private shuttingDown = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private untrim: () => void;
  private readonly finished = Promise.withResolvers<void>();
  private transportClosed = false;

  constructor(
    private transport: Transport,
    start: Start,
    private readonly limits: ConnectionLimits,
    private readonly logger: Logger,
    private readonly tls?: ConnectionTls,
  ) {
    this.decoder = new ClientStreamDecoder({ maxOptionLength: limits.maxOptionLength, maxDrain: limits.maxDrain });
    this.arenas = new ReadArenas(arenaPool, this.decoder);
    this.untrim = this.attach(transport);
    if ('negotiation' in start) {
      this.arenas.allowLarge = false; // a handshaking connection holds no large buffer
      // Without TLS no STARTTLS can change the stream: read into the arenas from the start
      // rather than into a fresh buffer per read (garbage a flood of handshakes piles up).
      if (tls === undefined || tls.server.mode === 'off') transport.readDirect?.();
      this.enter({ phase: 'handshake', negotiation: start.negotiation });
      this.send(encodeGreeting(start.negotiation.greeting()));
      // The limit covers every option and a TLS handshake.
      this.timer(limits.handshakeTimeout, () => {
        this.logger.info(`${this.peer}: handshake timed out`);
        this.transport.destroy();
      });
    } else {
      if (start.greeting) this.send(encodeGreeting(start.greeting));
      this.transmit(start.session, start.ownsDevice);
    }
    if (this.transportClosed || transport.closed) this.onTransportClosed(undefined);
    else this.resume();
  }

  /** Reads `transport` into this connection's arenas; returns what stops its arena trimming. */
  private attach(transport: Transport): () => void {
    transport.onDrain = () => this.maybeResume();
    transport.onClose = (err) => this.onTransportClosed(err);
    transport.read({
      buffer: () => this.arenas.buffer(),
      filled: (n) => {
        this.arenas.filled(n);
        this.parse();
        return !this.paused;
      },
      ended: (err) => this.onEnded(err),
    });
    return trimWhenQuiet(this.arenas, transport);
  }

  get peer(): string {
    return this.transport.peer.address;
  }

  get phase(): Phase {
    return this.state.phase;
  }

  /** Settles once the transport closed, nothing is in flight and an owned device is closed. */
  get done(): Promise<void> {
    return this.finished.promise;
  }

  /** Server shutdown: options get ERR_SHUTDOWN, requests ESHUTDOWN; then the connection closes. */
  shutdown(graceMs: number): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    const s = this.state;
    if (s.phase === 'handshake' || s.phase === 'starting-tls') {
      s.negotiation.shutdown();
      this.timer(graceMs, () => this.transport.destroy());
    } else if (s.phase === 'transmitting' || s.phase === 'draining') {
      s.t.engine.shutdown();
      if (s.phase === 'transmitting') this.enter({ phase: 'draining', t: s.t });
      this.maybeFinishDraining();
    }
  }

  // ------------------------------------------------------------ state

  private enter(next: State): void {
    const from = this.state.phase;
    if (from !== next.phase && !transitions[from].includes(next.phase))
      throw new Error(`internal: connection cannot go from ${from} to ${next.phase}`);
    this.state = next;
  }

  private transmit(session: Session, ownsDevice: boolean): void {
    this.decoder.startTransmission(session.extended, session.blockSizes.max);
    this.arenas.allowLarge = true;
    this.transport.readDirect?.();
    const budget = new Budget(this.limits, this.arenas, this.transport, () => this.budgetChanged());
    const writer = new ReplyWriter(this.transport, session, () => budget.written());
    const engine = new TransmissionEngine(session, writer, budget, this.logger, this.peer);
    this.enter({ phase: 'transmitting', t: { session, ownsDevice, engine, budget } });
    this.logger.debug(`${this.peer}: serving "${session.export.name}" flags 0x${session.flags.toString(16)}`);
    if (this.shuttingDown) engine.shutdown();
  }

  // ------------------------------------------------------------ reading

  private parse(): void {
    if (this.parsing) return; // a frame's handler resumed us: the outer loop goes on
    this.parsing = true;
    try {
      while (!this.paused && !this.busy && this.state.phase !== 'closed') {
        // closing: frames are still decoded (to see the client's EOF) and dropped.
        const frame = this.decoder.next();
        if (frame === undefined) break;
        this.onFrame(frame);
      }
    } catch (e) {
      this.logger.warn(`${this.peer}: ${(e as Error).message}; closing`);
      this.transport.destroy();
    } finally {
      this.parsing = false;
    }
  }

  private onFrame(frame: ClientFrame): void {
    const s = this.state;
    if (s.phase === 'handshake') {
      const step = s.negotiation.handle(frame);
      if (!isPromise(step)) {
        this.applyStep(step);
        return;
      }
      this.busy = true;
      step.then(
        (st) => {
          this.busy = false;
          this.applyStep(st);
          this.parse();
        },
        (e: unknown) => {
          this.busy = false;
          this.logger.warn(`${this.peer}: handshake failed: ${(e as Error).message}`);
          this.close();
        },
      );
      return;
    }
    if (s.phase !== 'transmitting' || frame.kind !== 'request') return; // draining, closing: dropped
    const { request, payload, oversized } = frame;
    if (s.t.engine.request({ request, payload: payload && this.arenas.lease(payload), oversized }) === 'disconnect') this.drain(s.t);
    else if (!s.t.budget.canRead()) this.pause();
  }

  /**
   * STARTTLS was acknowledged: bytes the client sent after it and before the TLS
   * handshake are dropped, never interpreted (the class of nbdkit's CVE-2021-3716);
   * the options that follow come over TLS, with everything negotiated so far forgotten.
   */
  private startTls(): void {
    const s = this.state;
    const tls = this.tls;
    if (s.phase !== 'handshake' || tls === undefined || !(this.transport instanceof NodeTransport)) {
      this.logger.warn(`${this.peer}: STARTTLS on a transport that cannot upgrade; closing`);
      this.close();
      return;
    }
    this.enter({ phase: 'starting-tls', negotiation: s.negotiation });
    this.pause();
    this.decoder.drain();
    this.untrim();
    const plain = this.transport;
    plain
      .startTls((raw) => tls.server.accept(raw, this.limits.handshakeTimeout))
      .then(
        async ({ transport, identity }) => {
          this.transport = transport;
          this.untrim = this.attach(transport);
          this.logger.debug(
            `${this.peer}: TLS up (${identity.protocol}, ${identity.cipher}${identity.psk ? `, PSK user ${identity.psk}` : identity.subject ? `, ${identity.subject}` : ''})`,
          );
          if (tls.authorize && !(await tls.authorize(identity))) {
            this.logger.info(`${this.peer}: refused by preconnect after TLS`);
            this.transport.destroy();
            return;
          }
          // The client may have gone (or the handshake limit passed) while preconnect ran.
          if (this.state.phase !== 'starting-tls') return;
          s.negotiation.afterTls(identity);
          this.enter({ phase: 'handshake', negotiation: s.negotiation });
          this.resume();
        },
        (e: unknown) => {
          this.logger.info(`${this.peer}: ${(e as Error).message}; closing`);
          plain.destroy();
          this.onTransportClosed(undefined);
        },
      );
  }

  private applyStep(step: NegotiationStep): void {
    if (this.state.phase !== 'handshake') {
      if (step.next === 'transmit' && step.ownsDevice) void this.closeDevice(step.session.device);
      return;
    }
    for (const m of step.send) this.send(encodeServerMessage(m));
    if (step.next === 'close') {
      this.logger.info(`${this.peer}: ${step.reason}; closing`);
      this.close();
    } else if (step.next === 'starttls') {
      this.startTls();
    } else if (step.next === 'transmit') {
      this.clearTimers();
      this.transmit(step.session, step.ownsDevice);
    }
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.transport.pause();
  }

  private resume(): void {
    if (!this.paused || this.state.phase === 'closed') return;
    this.paused = false;
    this.parse();
    if (!this.paused) this.transport.resume();
  }

  private maybeResume(): void {
    const s = this.state;
    if (this.paused && (s.phase !== 'transmitting' || s.t.budget.canRead())) this.resume();
  }

  // ------------------------------------------------------------ ending

  /** A request was answered, or queued replies went out. */
  private budgetChanged(): void {
    const phase = this.state.phase;
    if (phase === 'draining') this.maybeFinishDraining();
    else if (phase === 'closing') this.maybeDone();
    else this.maybeResume();
  }

  /** The client's stream ended (EOF) or broke: answer what is in flight, then close. */
  private onEnded(err: Error | undefined): void {
    if (err !== undefined) this.logger.debug(`${this.peer}: ${err.message}`);
    const s = this.state;
    if (s.phase === 'transmitting') this.drain(s.t);
    else if (s.phase === 'handshake') this.close();
  }

  /** No more requests: close once what is in flight is answered. */
  private drain(t: Transmit): void {
    t.engine.stop();
    this.enter({ phase: 'draining', t });
    this.maybeFinishDraining();
  }

  private maybeFinishDraining(): void {
    const s = this.state;
    if (s.phase === 'draining' && s.t.budget.requests === 0) this.close();
  }

  /** Ends our side; a client that never reads the rest of our replies does not hold the connection forever. */
  private close(): void {
    const s = this.state;
    if (s.phase === 'closing' || s.phase === 'closed') return;
    this.enter({ phase: 'closing', t: s.phase === 'transmitting' || s.phase === 'draining' ? s.t : undefined });
    this.clearTimers();
    if (!this.transportClosed) {
      this.transport.end();
      // Drop whatever else arrives, but read on to see the peer's EOF.
      this.paused = false;
      this.transport.resume();
      this.timer(CLOSE_GRACE_MS, () => this.transport.destroy());
    }
    this.maybeDone();
  }

  private onTransportClosed(err: Error | undefined): void {
    if (this.transportClosed) return;
    this.transportClosed = true;
    if (err !== undefined) this.logger.debug(`${this.peer}: transport error: ${err.message}`);
    const s = this.state;
    if (s.phase !== 'closing' && s.phase !== 'closed') {
      this.enter({ phase: 'closing', t: s.phase === 'transmitting' || s.phase === 'draining' ? s.t : undefined });
    }
    const c = this.state;
    if (c.phase === 'closing') c.t?.engine.abort();
    this.clearTimers();
    this.untrim();
    this.arenas.dispose();
    this.maybeDone();
    // A device call that ignores its aborted signal and never settles must not keep the
    // connection (and the server's close()) waiting forever.
    if (this.state.phase === 'closing') this.timer(CLOSE_GRACE_MS, () => this.abandonDeviceCalls());
  }

  /** closing → closed once the transport is gone and no device call is running. */
  private maybeDone(): void {
    const s = this.state;
    if (s.phase !== 'closing' || !this.transportClosed || (s.t !== undefined && s.t.budget.requests > 0)) return;
    this.finish(s);
  }

  private abandonDeviceCalls(): void {
    const s = this.state;
    if (s.phase !== 'closing') return;
    this.logger.warn(
      `${this.peer}: ${s.t?.budget.requests ?? 0} device calls still running ${CLOSE_GRACE_MS} ms after the connection closed; no longer waiting for them`,
    );
    this.finish(s);
  }

  private finish(s: { t: Transmit | undefined }): void {
    this.enter({ phase: 'closed' });
    const owned = s.t?.ownsDevice ? this.closeDevice(s.t.session.device) : Promise.resolve();
    void owned.then(() => this.finished.resolve());
  }

  private async closeDevice(device: Device): Promise<void> {
    try {
      await device.close?.();
    } catch (e) {
      this.logger.warn(`device close failed: ${(e as Error).message}`);
    }
  }

  // ------------------------------------------------------------ helpers

  private send(bytes: Uint8Array): void {
    if (!this.transport.closed) this.transport.write(bytes);
  }

  private timer(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  private clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}
