// The test run's Ceph (test/support/ceph.ts): what the RBD and S3 tests rely on. Two
// files asking for it in one run get the same cluster; it writes nowhere but its dir.
import { readdirSync, statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { sharedCeph } from '../support/ceph.js';
import { runOk } from '../support/peers.js';
import { presignedGet, s3Put } from '../support/s3.js';

describe('the test run’s Ceph', () => {
  it('has a monitor, an OSD up, the rbd pool, and only loopback addresses', async () => {
    const c = await sharedCeph();
    const status = JSON.parse(await runOk('ceph', ['-c', c.conf, 'status', '--format=json'])) as {
      osdmap: { num_up_osds: number };
      monmap?: { mons?: { public_addr: string }[] };
    };
    expect(status.osdmap.num_up_osds).toBe(1);
    const pools = JSON.parse(await runOk('ceph', ['-c', c.conf, 'osd', 'pool', 'ls', '--format=json'])) as string[];
    expect(pools).toContain('rbd');
    const dump = JSON.parse(await runOk('ceph', ['-c', c.conf, 'osd', 'dump', '--format=json'])) as {
      osds: { public_addrs: { addrvec: { addr: string }[] } }[];
    };
    for (const a of dump.osds[0]!.public_addrs.addrvec) expect(a.addr).toMatch(/^127\.0\.0\.1:/);
    expect(new URL(c.s3.endpoint).hostname).toBe('127.0.0.1');
    // Nothing under Debian's default Ceph directories is newer than the cluster.
    const since = statSync(c.conf).mtimeMs;
    for (const d of ['/var/log/ceph', '/run/ceph', '/var/lib/ceph/crash'])
      for (const f of safeList(d)) expect(statSync(`${d}/${f}`).mtimeMs, `${d}/${f}`).toBeLessThan(since);
  });

  it('serves S3: a put object reads back through a SigV4 pre-signed ranged GET', async () => {
    const c = await sharedCeph();
    const body = new Uint8Array(100_000).map((_, i) => i % 251);
    await s3Put(c, 'harness', 'a/b.raw', body);
    const url = presignedGet(c, 'harness', 'a/b.raw', 300);
    const r = await fetch(url, { headers: { range: 'bytes=1000-1999' } });
    expect(r.status).toBe(206);
    expect(r.headers.get('content-range')).toBe('bytes 1000-1999/100000');
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(body.subarray(1000, 2000));
    // The signature covers GET only: HEAD is refused, which is why HttpDevice falls back to GET bytes=0-0.
    expect((await fetch(url, { method: 'HEAD' })).status).toBe(403);
  });
});

function safeList(d: string): string[] {
  try {
    return readdirSync(d);
  } catch {
    return [];
  }
}
