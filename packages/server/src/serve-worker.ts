// The worker-thread side of ServeOptions.threads: opens each export's device from
// its recipe, then serves the sockets the main thread hands over (as descriptors).
import { type ServerTls, serverTls, socketFromFd } from '@nbd/node';
import { parentPort, workerData } from 'node:worker_threads';
import type { Device, Export } from './device.js';
import { type Logger, silentLogger } from './logger.js';
import { serve } from './serve.js';
import type { FromWorker, ToWorker, WorkerSetup } from './threads.js';

const port = parentPort!;
const setup = workerData as WorkerSetup;
const post = (m: FromWorker) => port.postMessage(m);
const forward = (level: keyof Logger) => (message: string) => post({ type: 'log', level, message });
const logger: Logger = setup.log
  ? { debug: forward('debug'), info: forward('info'), warn: forward('warn'), error: forward('error') }
  : silentLogger;

async function open(recipe: { module: string; args: unknown }): Promise<Device> {
  const mod = (await import(recipe.module)) as { openDevice?: (args: unknown) => Device | Promise<Device> };
  if (typeof mod.openDevice !== 'function') throw new TypeError(`${recipe.module} exports no openDevice()`);
  return mod.openDevice(recipe.args);
}

let exports: Export[];
let tls: ServerTls | undefined;
try {
  exports = await Promise.all(setup.exports.map(async ({ recipe, ...e }) => ({ ...e, device: await open(recipe) })));
  // Credentials are read once per worker, not per connection.
  tls = setup.options.tls ? await serverTls(setup.options.tls) : undefined;
} catch (e) {
  post({ type: 'failed', message: `worker could not open a device: ${(e as Error).message}` });
  process.exit(1);
}

const stop = new AbortController();
const live = new Set<Promise<void>>();
port.on('message', (m: ToWorker) => {
  if (m.type === 'serve') {
    const p = serve(socketFromFd(m.fd), exports, { ...setup.options, tls, signal: stop.signal, logger })
      .catch((e: unknown) => logger.error(`connection failed: ${(e as Error).message}`))
      .finally(() => {
        live.delete(p);
        post({ type: 'closed', id: m.id });
      });
    live.add(p);
  } else if (m.type === 'shutdown') stop.abort();
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
