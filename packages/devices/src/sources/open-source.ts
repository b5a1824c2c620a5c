// The worker-thread side of every source's share(): `openDevice(args)` builds the
// same source in this thread (a sparse-random map is shared, not drawn again).
import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { Device } from '@nbd/server';
import { DataDevice } from './data-device.js';
import { NullDevice, ZeroDevice } from './null-device.js';
import { PatternDevice } from './pattern-device.js';
import { RandomDevice } from './random-device.js';
import type { SourceArgs } from './source-recipe.js';
import { SparseRandomDevice } from './sparse-random-device.js';

/** Opens the source `args` describes (from a source's `share().args`). */
export function openDevice(args: unknown): Device {
  const a = args as SourceArgs;
  switch (a?.kind) {
    case 'null':
      return new NullDevice(a.size);
    case 'zero':
      return new ZeroDevice(a.size);
    case 'pattern':
      return new PatternDevice(a.size);
    case 'random':
      return new RandomDevice(a.size, { seed: a.seed });
    case 'sparse-random':
      return new SparseRandomDevice(a.size, a);
    case 'data':
      return new DataDevice(a.data, { size: a.size, readOnly: true, maxWork: a.maxWork });
  }
  throw new NbdInvalidArgumentError(`open-source: unknown source ${JSON.stringify((args as { kind?: unknown })?.kind)}`);
}
