// A pluggable logger (console fits); the default says nothing.
/** Where the server writes what happens (`ServeOptions.logger`); `console` fits. */
export interface Logger {
  /** Per-connection detail: exports served, TLS up, requests rejected or failed. */
  debug(message: string): void;
  /** Normal events: listening, handshake timeouts, connections refused by `preconnect`. */
  info(message: string): void;
  /** A connection went wrong or was refused (limits, failed handshake); the server goes on. */
  warn(message: string): void;
  /** A failure of the server itself: the listener, a worker thread, a connection that could not be served. */
  error(message: string): void;
}

const nothing = () => {};
/** The default {@link Logger}: drops every message. */
export const silentLogger: Logger = { debug: nothing, info: nothing, warn: nothing, error: nothing };
