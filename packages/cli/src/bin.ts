#!/usr/bin/env node
// The `nbd` executable: checks the Node.js version, then runs main() with the
// process's arguments, streams and signals, and exits with its code. A closed pipe
// on stdout ends it quietly. Nothing but node: modules is imported statically, so
// the check runs before any of our code loads (an older Node would fail inside it).
import module from 'node:module';

const NODE_MAJOR_NEEDED = 22; // NODE_MAJOR_NEEDED of @nbd/protocol, and engines.node
if (Number.parseInt(process.versions.node, 10) < NODE_MAJOR_NEEDED) {
  process.stderr.write(`nbd: needs Node.js ${NODE_MAJOR_NEEDED} or newer (this is ${process.version})\n`);
  process.exit(1);
}

// Compiled code cached on disk between runs (Node ≥ 22.1): a command starts faster the second time.
(module as { enableCompileCache?: () => unknown }).enableCompileCache?.(); // not in @types/node 20
const { main } = await import('./main.js');
const { processIo, quietOnClosedPipe } = await import('./output.js');

quietOnClosedPipe(process.stdout);
quietOnClosedPipe(process.stderr);
const stop = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    // A second signal while winding down: stop at once.
    if (stop.signal.aborted) process.exit(sig === 'SIGTERM' ? 143 : 130);
    stop.abort(sig);
  });
}
const code = await main(process.argv.slice(2), processIo(), stop.signal);
process.exit(code);
