// The kernel speaks only plain NBD. A connection that has no descriptor of its own
// (a TLS session: the encryption happens in this process) reaches the kernel through
// a socketpair: the kernel gets one end, and this process copies bytes between the
// other end and the connection, both ways, with backpressure (what nbd-client's TLS
// support does). The pump runs as long as the device uses it; when either side
// closes, so does the other.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { socketPair } from '@nbd/node';
import { resumeReading } from '@nbd/node/internal';

export interface Pump {
  /** The end to hand to the kernel (its descriptor). */
  kernelEnd: Socket;
  /** Settles when both directions have stopped (the device disconnected, or the connection died). */
  done: Promise<void>;
}

/** Starts copying between `connection` and a fresh socketpair; the kernel gets `kernelEnd`. */
export function pumpFor(connection: Duplex): Pump {
  const [ours, kernelEnd] = socketPair();
  const done = Promise.withResolvers<void>();
  let open = 2;
  const stopped = () => {
    if (--open === 0) done.resolve();
  };
  const end = (err?: Error) => {
    ours.destroy(err);
    connection.destroy(err);
  };
  ours.once('close', stopped);
  connection.once('close', stopped);
  ours.on('error', end);
  connection.on('error', end);
  // Either side ending ends the other: the kernel closing its end is a disconnect.
  ours.once('end', () => connection.end());
  connection.once('end', () => ours.end());
  ours.pipe(connection, { end: false });
  connection.pipe(ours, { end: false });
  resumeReading(connection); // detach() stopped its handle
  connection.resume();
  return { kernelEnd, done: done.promise };
}
