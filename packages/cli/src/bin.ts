#!/usr/bin/env node
// The `nbd` executable: checks the Node.js version, then runs main() with the
// process's arguments, streams and signals, and exits with its code, or dies from
// the signal that interrupted it. A closed pipe on stdout ends it quietly. Nothing
// but node: modules is imported statically, so the check runs before any of our
// code loads (an older Node would fail inside it).
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
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Dies from `sig` as a C tool would, so that a shell sees it (a `for` loop stops on
 * Ctrl-C): our handlers removed, the signal sent to ourselves. `code` if it does not kill.
 */
function dieFrom(sig: NodeJS.Signals, code: number): void {
  for (const s of SIGNALS) process.removeAllListeners(s);
  process.kill(process.pid, sig);
  setTimeout(() => process.exit(code), 1000).unref();
}

const stop = new AbortController();
for (const sig of SIGNALS) {
  process.on(sig, () => {
    // A second signal while winding down: stop at once.
    if (stop.signal.aborted) dieFrom(sig, sig === 'SIGTERM' ? 143 : 130);
    else stop.abort(sig);
  });
}
const code = await main(process.argv.slice(2), processIo(), stop.signal);
// Interrupted (128 + a signal's number) once the command cleaned up: re-raise the signal.
const reason: unknown = stop.signal.reason;
if (code >= 128 && typeof reason === 'string' && (SIGNALS as readonly string[]).includes(reason)) dieFrom(reason as NodeJS.Signals, code);
else process.exit(code);
