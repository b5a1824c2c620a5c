// `nbd serve --run CMD`: the server as a captive of a shell command, as nbdkit's
// --run: CMD sees $uri (and its synonym $nbd), $exportname, $port, $unixsocket and
// $tls; the server stops when CMD exits, and CMD's exit code is the command's.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { tieToSignal } from '@nbd/protocol';

/** What CMD's environment says about the server. */
export interface CaptiveEnv {
  uri: string;
  exportname: string;
  port: string;
  unixsocket: string;
  /** nbdkit's $tls: 1 for --tls=on, 2 for require; absent otherwise. */
  tls?: string;
}

/**
 * Runs `cmd` with /bin/sh and resolves with its exit code (128 + the signal's number
 * when a signal ended it). Aborting `signal` sends CMD SIGTERM.
 */
export function runCaptive(cmd: string, env: CaptiveEnv, signal: AbortSignal, stderr: NodeJS.WritableStream): Promise<number> {
  const { promise, resolve, reject } = Promise.withResolvers<number>();
  const vars: Record<string, string> = {
    uri: env.uri,
    nbd: env.uri,
    exportname: env.exportname,
    port: env.port,
    unixsocket: env.unixsocket,
  };
  if (env.tls !== undefined) vars.tls = env.tls;
  const child = spawn('/bin/sh', ['-c', cmd], { stdio: 'inherit', env: { ...process.env, ...vars } });
  const untie = tieToSignal(signal, () => child.kill('SIGTERM'));
  child.once('error', (e) => {
    untie();
    reject(e);
  });
  child.once('exit', (code, sig) => {
    untie();
    if (code !== null) return resolve(code);
    stderr.write(`nbd serve: the --run command was killed by ${sig}\n`);
    resolve(128 + (constants.signals[sig as keyof typeof constants.signals] ?? 0));
  });
  return promise;
}
