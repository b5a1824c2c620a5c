// The CommonJS consumer: require() of every package (ES modules, loaded by Node's
// require(esm), unflagged since 22.12), then the shared exercise.
'use strict';
const { Client } = require('@nbd/client');
const { copy } = require('@nbd/copy');
const { FileDevice } = require('@nbd/devices');
const { loopback } = require('@nbd/linux');
const node = require('@nbd/node');
const { AllocationState, parseNbdUri } = require('@nbd/protocol');
const { MemoryDevice, SharedMemoryDevice, listenAndServe } = require('@nbd/server');
const { exercise } = require('./exercise.cjs');

if (typeof loopback !== 'function' || Object.keys(node).length === 0) throw new Error('@nbd/linux or @nbd/node exports nothing');
if (parseNbdUri('nbd://h:1/e').port !== 1) throw new Error('@nbd/protocol parseNbdUri');
exercise({ Client, AllocationState, MemoryDevice, SharedMemoryDevice, FileDevice, listenAndServe, copy }, (line) =>
  console.log(`cjs: ${line}`),
).then(
  () => console.log('cjs consumer ok'),
  (err) => {
    console.error(err);
    process.exit(1); // a failed check may leave a connection open
  },
);
