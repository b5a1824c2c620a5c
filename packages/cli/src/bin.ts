#!/usr/bin/env node
// The `nbd` executable: runs main() with the process's arguments, streams and
// signals, and exits with its code. A closed pipe on stdout ends it quietly.
import module from 'node:module';

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
