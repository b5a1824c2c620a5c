// The ESM consumer: `import` of every package, then the shared exercise.
import { Client } from '@nbd/client';
import { copy } from '@nbd/copy';
import { FileDevice } from '@nbd/devices';
import { loopback } from '@nbd/linux';
import * as node from '@nbd/node';
import { AllocationState, parseNbdUri } from '@nbd/protocol';
import { listenAndServe, MemoryDevice, SharedMemoryDevice } from '@nbd/server';
import { exercise } from './exercise.cjs';

if (typeof loopback !== 'function' || Object.keys(node).length === 0) throw new Error('@nbd/linux or @nbd/node exports nothing');
if (parseNbdUri('nbd://h:1/e').port !== 1) throw new Error('@nbd/protocol parseNbdUri');
await exercise({ Client, AllocationState, MemoryDevice, SharedMemoryDevice, FileDevice, listenAndServe, copy }, (line) =>
  console.log(`esm: ${line}`),
);
console.log('esm consumer ok');
