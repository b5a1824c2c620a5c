#!/usr/bin/env node
// A recording proxy for NBD conversations: listens on a unix socket, forwards each
// accepted connection to a real server's unix socket, and keeps every byte of both
// directions, in order, so the bytes can be committed as test vectors.
//
//   node test/captures/record.mjs LISTEN.sock SERVER.sock OUT.json
//
// records until SIGINT/SIGTERM, then writes OUT.json. capture.mjs uses `startRecorder`
// directly. Only Node built-ins: this runs without a build.
import { writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';

/**
 * Starts the proxy. `stop()` closes the listener, waits for open connections to end,
 * and resolves to `[{ c2s, s2c }]` (hex strings, one entry per connection, in accept order).
 */
export function startRecorder(listenPath, targetPath) {
  const connections = [];
  const open = new Set();
  const server = createServer((client) => {
    const record = { c2s: [], s2c: [] };
    connections.push(record);
    const upstream = connect(targetPath);
    const done = new Promise((resolve) => {
      let closed = 0;
      const onClose = () => {
        if (++closed === 2) resolve();
      };
      client.once('close', onClose);
      upstream.once('close', onClose);
    });
    open.add(done);
    done.then(() => open.delete(done));
    client.on('data', (d) => {
      record.c2s.push(Buffer.from(d));
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      record.s2c.push(Buffer.from(d));
      client.write(d);
    });
    // Half-closes pass through, so "client sent ABORT and closed" is seen by the server.
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  const listening = new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPath, () => resolve());
  });
  return {
    listening,
    async stop(timeoutMs = 5000) {
      server.close();
      await Promise.race([Promise.all([...open]), new Promise((r) => setTimeout(r, timeoutMs))]);
      return connections.map((c) => ({
        c2s: Buffer.concat(c.c2s).toString('hex'),
        s2c: Buffer.concat(c.s2c).toString('hex'),
      }));
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [listenPath, targetPath, out] = process.argv.slice(2);
  if (!listenPath || !targetPath || !out) {
    console.error('usage: record.mjs LISTEN.sock SERVER.sock OUT.json');
    process.exit(2);
  }
  const rec = startRecorder(listenPath, targetPath);
  await rec.listening;
  console.error(`recording ${listenPath} -> ${targetPath}; Ctrl-C to write ${out}`);
  const finish = async () => {
    const connections = await rec.stop(1000);
    writeFileSync(out, `${JSON.stringify({ connections }, null, 2)}\n`);
    process.exit(0);
  };
  process.once('SIGINT', finish);
  process.once('SIGTERM', finish);
}
