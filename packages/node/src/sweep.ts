// Memory returns after load: once a second, every connection that read nothing
// since the last look gives its large read arena back to the pool (ReadArenas.trim).
// One timer for all connections, unref'd, running only while some are registered.
import type { ReadArenas, Transport } from '@nbd/protocol';

const SWEEP_MS = 1000;
const watched = new Map<ReadArenas, Transport>();
let timer: NodeJS.Timeout | undefined;

function sweep(): void {
  for (const [arenas, transport] of watched) {
    if (arenas.active) arenas.active = false;
    else if (arenas.trim()) transport.rebuffer();
  }
}

/** Trims `arenas` whenever its connection is quiet; call the returned function when the connection closes. */
export function trimWhenQuiet(arenas: ReadArenas, transport: Transport): () => void {
  watched.set(arenas, transport);
  if (timer === undefined) {
    timer = setInterval(sweep, SWEEP_MS);
    timer.unref();
  }
  return () => {
    watched.delete(arenas);
    if (watched.size === 0 && timer !== undefined) {
      clearInterval(timer);
      timer = undefined;
    }
  };
}
