// Free loopback ports for daemons the tests start (nginx, Ceph) that take a port number.
import { createServer } from 'node:net';

/** A free TCP port on 127.0.0.1, closed again so the daemon can bind it (a small race, retried by nobody). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
