// The worker-thread side of ServeOptions.threads: opens each export's device from
// its recipe, then serves the sockets the main thread hands over (as descriptors),
// each with the options a connection on the main thread gets (connectionOptions):
// the same data, and the hooks called on the main thread.

import { parentPort, workerData } from 'node:worker_threads';
import { type ServerTls, serverTls, socketFromFd } from '@nbd/node';
import type { Device, DeviceRecipe, Export } from './device.js';
import { type Logger, silentLogger } from './logger.js';
import { serveAdmitted } from './serve.js';
import { type ConnectionData, connectionOptions } from './serve-options.js';
import { HookClient } from './thread-hooks.js';
import type { FromWorker, ToWorker, WorkerSetup } from './threads.js';

const port = parentPort!;
const setup = workerData as WorkerSetup;
const post = (m: FromWorker) => port.postMessage(m);
const forward = (level: keyof Logger) => (message: string) => post({ type: 'log', level, message });
const logger: Logger = setup.log
  ? { debug: forward('debug'), info: forward('info'), warn: forward('warn'), error: forward('error') }
  : silentLogger;

async function open(recipe: DeviceRecipe): Promise<Device> {
  const mod = (await import(recipe.module)) as { openDevice?: (args: unknown) => Device | Promise<Device> };
  if (typeof mod.openDevice !== 'function') throw new TypeError(`${recipe.module} exports no openDevice()`);
  return mod.openDevice(recipe.args);
}

const hooks = new HookClient(post, setup.hooks, open);
let exports: Export[];
let data: ConnectionData;
try {
  exports = await Promise.all(setup.exports.map(async ({ recipe, ...e }) => ({ ...e, device: await open(recipe) })));
  // Credentials are read once per worker, not per connection.
  const tls: ServerTls | undefined = setup.data.tls ? await serverTls(setup.data.tls) : undefined;
  data = { ...setup.data, tls };
} catch (e) {
  post({ type: 'failed', message: `worker could not start: ${(e as Error).message}` });
  process.exit(1);
}

const stop = new AbortController();
const live = new Set<Promise<void>>();
port.on('message', (m: ToWorker) => {
  if (m.type === 'serve') {
    const options = connectionOptions(data, hooks.forConnection(m.id), stop.signal, logger);
    const p = serveAdmitted(socketFromFd(m.fd), exports, options)
      .catch((e: unknown) => logger.error(`connection failed: ${(e as Error).message}`))
      .finally(() => {
        live.delete(p);
        post({ type: 'closed', id: m.id });
      });
    live.add(p);
  } else if (m.type === 'result') hooks.settle(m);
  else if (m.type === 'shutdown') stop.abort();
  else {
    stop.abort();
    void (async () => {
      await Promise.allSettled([...live]);
      await Promise.allSettled(exports.map((e) => e.device.close?.()));
      port.close();
    })();
  }
});
post({ type: 'ready' });
