// Endpoints without offsets: `null:` discards; `-` is standard output as a
// destination (writes leave in offset order, zero ranges as zero bytes, since a
// pipe cannot seek) and standard input as a source (read to its end, in order).
import type { Readable, Writable } from 'node:stream';
import { NbdStateError } from '@nbd/protocol';
import type { Sink, Source } from './ends.js';

/** `null:`: a destination that reads as zeroes and keeps nothing. */
export function nullSink(): Sink {
  const done = async () => {};
  return { size: undefined, connections: 1, knownZero: true, sequential: false, write: done, zero: done, finish: done, close: done };
}

const ZEROES = new Uint8Array(1 << 20);

/** Writes `bytes` to `out`, resolving once the stream took them (and after 'drain' when it asked for one). */
function writeOut(out: Writable, bytes: Uint8Array): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  out.write(bytes, (err) => (err ? reject(err) : resolve()));
  return promise;
}

/**
 * A stream destination (standard output): writes may be issued in any order, each
 * resolves once it and everything before it went out. Holds at most what the copy
 * has in flight.
 */
export function stdoutSink(out: Writable): Sink {
  let next = 0; // where the stream is up to, in the copy's offsets
  let tail: Promise<void> = Promise.resolve(); // the stream's writes, one after another
  const waiting = new Map<number, () => void>(); // offset → starts that range's writing
  const enqueue = (offset: number, length: number, data: Uint8Array | undefined): Promise<void> => {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const start = () => {
      tail = tail.then(async () => {
        if (data !== undefined) return writeOut(out, data);
        for (let pos = 0; pos < length; pos += ZEROES.length)
          await writeOut(out, ZEROES.subarray(0, Math.min(ZEROES.length, length - pos)));
      });
      tail.then(resolve, reject);
      next = offset + length;
      const after = waiting.get(next);
      if (after !== undefined) {
        waiting.delete(next);
        after();
      }
    };
    if (offset === next) start();
    else waiting.set(offset, start);
    return promise;
  };
  return {
    size: undefined,
    connections: 1,
    knownZero: false,
    sequential: true,
    write: (buf, off) => enqueue(off, buf.length, buf),
    zero: (off, len) => enqueue(off, len, undefined),
    finish: async () => {
      await tail;
    },
    close: async () => {}, // standard output stays open
  };
}

/** Standard input as a source: its chunks, read in order to the end. */
export function stdinSource(input: Readable): Source {
  return {
    size: undefined,
    connections: 1,
    read: () => Promise.reject(new NbdStateError('internal: a stream source is read through `stream`')),
    stream: input,
    close: async () => {
      input.pause();
    },
  };
}
