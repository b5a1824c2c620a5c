// The lifecycle of one server connection (connection.ts drives it): one state union
// and its transition table, and what a connection starts from and is limited by.
//
//   new ──► handshake ──► transmitting ──► draining ──► closing ──► closed
//    │        ▲    │ ▲                          ▲             ▲
//    │  starting-tls ┘ └────────────────────────┼─────────────┘
//    └────────────────►┘                        │
//                 (the transport died, a protocol error)
//
// handshake: the greeting is sent; options are answered one at a time.
// starting-tls: STARTTLS was acknowledged; the TLS handshake runs; then handshake again.
// transmitting: requests are dispatched as they arrive, within the in-flight limits.
// draining: NBD_CMD_DISC, the end of the stream, or server shutdown: no new requests
//   (shutdown: ESHUTDOWN); what is in flight is answered, then we close.
// closing: our side is ended (or the transport died); waiting for the transport to
//   close and for device calls still running (at most 5 s once the transport is gone).
// closed: everything settled; an owned device is closed.

import type { ServerTls, TlsIdentity } from '@nbd/node';
import type { Greeting } from '@nbd/protocol';
import type { Budget } from './budget.js';
import type { Negotiation } from './negotiation.js';
import type { Session } from './session.js';
import type { TransmissionEngine } from './transmission-engine.js';

/** Limits of one connection. */
export interface ConnectionLimits {
  /** Requests in flight before reading pauses. */
  maxInFlight: number;
  /** Request and reply bytes in flight before reading pauses. */
  maxInFlightBytes: number;
  /** Milliseconds to finish the handshake. */
  handshakeTimeout: number;
  /** Largest option a client may send. */
  maxOptionLength: number;
  /** Largest payload drained to stay in sync before the stream is declared broken. */
  maxDrain: number;
}

/** What a connection in transmission holds. */
export interface Transmit {
  session: Session;
  ownsDevice: boolean;
  engine: TransmissionEngine;
  /** What is in flight and queued: whether reading may go on. */
  budget: Budget;
}

export type State =
  | { phase: 'new' }
  | { phase: 'handshake' | 'starting-tls'; negotiation: Negotiation }
  | { phase: 'transmitting' | 'draining'; t: Transmit }
  | { phase: 'closing'; t: Transmit | undefined }
  | { phase: 'closed' };
export type Phase = State['phase'];

/** Which phases each phase may go to; anything else is a bug. */
export const transitions: Record<Phase, readonly Phase[]> = {
  new: ['handshake', 'transmitting'],
  handshake: ['starting-tls', 'transmitting', 'closing'],
  'starting-tls': ['handshake', 'closing'],
  transmitting: ['draining', 'closing'],
  draining: ['closing'],
  closing: ['closed'],
  closed: [],
};

/** How a connection starts: newstyle negotiation, or straight to transmission (oldstyle, kernel hand-over). */
export type Start = { negotiation: Negotiation } | { session: Session; ownsDevice: boolean; greeting?: Greeting };

/** STARTTLS on this connection: the credentials, and a check of who the client turned out to be. */
export interface ConnectionTls {
  server: ServerTls;
  /** Called once TLS is up (ServeOptions.preconnect with `tls` set); false closes the connection. */
  authorize?: (identity: TlsIdentity) => boolean | Promise<boolean>;
}
