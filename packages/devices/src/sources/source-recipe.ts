// How worker threads open a source (Device.share): one module for every source,
// dispatching on `kind`; the args are plain values (and SharedArrayBuffers).
import type { DeviceRecipe } from '@nbd/server';

/** What a source's share() hands a worker thread. */
export type SourceArgs =
  | { kind: 'null' | 'zero' | 'pattern'; size: number }
  | { kind: 'random'; size: number; seed: number }
  | {
      kind: 'sparse-random';
      size: number;
      seed: number;
      percent: number;
      runLength: number;
      randomContent: boolean;
      map: SharedArrayBuffer;
    }
  | { kind: 'data'; data: string | Uint8Array; size: number; maxWork: number };

/** The recipe of a source: this directory's open-source module, with `args`. */
export function sourceRecipe(args: SourceArgs): DeviceRecipe {
  return { module: new URL('./open-source.js', import.meta.url).href, args };
}
