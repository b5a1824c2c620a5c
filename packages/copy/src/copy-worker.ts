// A worker thread's share of copy({ threads }): it opens both endpoints again (its
// own connections, its own file handle) and takes chunks from the shared counter
// until none are left, then flushes what it wrote.
import { parentPort, workerData } from 'node:worker_threads';
import { Chunks } from './chunks.js';
import { openSink, openSource } from './endpoints.js';
import { copyChunks, finish } from './window.js';
import { type CopyWorkerData, errorMessage, type FromCopyWorker } from './workers.js';

const port = parentPort!;
const data = workerData as CopyWorkerData;
const post = (m: FromCopyWorker) => port.postMessage(m);
const ac = new AbortController();
port.on('message', (m: unknown) => {
  if (m === 'abort') ac.abort();
});

/** Progress is reported in steps of this many bytes (and at the end), not per request. */
const STEP = 32 * 1024 * 1024;
let unreported = 0;

const opts = { ...data.opts, signal: ac.signal };
const [source, sink] = await Promise.allSettled([openSource(data.src, opts), openSink(data.dst, opts, true)]);
try {
  if (source.status === 'rejected') throw source.reason;
  if (sink.status === 'rejected') throw sink.reason;
  const zeroBytes = await copyChunks(source.value, sink.value, new Chunks(data.total, data.counter), opts, (n) => {
    unreported += n;
    if (unreported >= STEP) {
      post({ type: 'progress', bytes: unreported });
      unreported = 0;
    }
  });
  await finish(sink.value, data.total, data.opts.flush !== false);
  if (unreported > 0) post({ type: 'progress', bytes: unreported });
  post({ type: 'done', zeroBytes });
} catch (e) {
  post(errorMessage(e));
} finally {
  await Promise.allSettled([source.status === 'fulfilled' && source.value.close(), sink.status === 'fulfilled' && sink.value.close()]);
  port.close();
}
