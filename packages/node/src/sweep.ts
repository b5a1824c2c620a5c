// Memory returns after load: once a second, every connection that read nothing
// since the last look gives its large read arena back to its pool
// (ReadArenas.trim), and a pool nobody took from drops a spare (ArenaPool.decay).
// One timer for all, unref'd, running only while there is something to give back.
import type { ArenaPool, ReadArenas, Transport } from '@nbd/protocol';

const SWEEP_MS = 1000;
const watched = new Map<ReadArenas, Transport>();
const pools = new Set<ArenaPool>();
let timer: NodeJS.Timeout | undefined;

function sweep(): void {
  for (const [arenas, transport] of watched) {
    if (arenas.active) arenas.active = false;
    else if (arenas.trim()) transport.rebuffer();
  }
  for (const pool of pools) {
    pool.decay();
    if (pool.spares === 0 && pool.leased === 0) pools.delete(pool);
  }
  if (watched.size === 0 && pools.size === 0 && timer !== undefined) {
    clearInterval(timer);
    timer = undefined;
  }
}

/** Trims `arenas` whenever its connection is quiet; call the returned function when the connection closes. */
export function trimWhenQuiet(arenas: ReadArenas, transport: Transport): () => void {
  watched.set(arenas, transport);
  pools.add(arenas.pool);
  if (timer === undefined) {
    timer = setInterval(sweep, SWEEP_MS);
    timer.unref();
  }
  return () => {
    watched.delete(arenas);
  };
}
