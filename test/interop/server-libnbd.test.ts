// libnbd's Python bindings against our server: strict mode, many pipelined
// aio requests, block status, FUA/flush/trim/zero, and opt mode.

import { MemoryDevice } from '@nbd/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPython } from '../support/peers.js';
import { MiB, type OurServer, startOurServer } from './server-support.js';

const SCRIPT = `
import sys, json, random, nbd
uri = sys.argv[1]
out = {}
h = nbd.NBD()
h.set_strict_mode(nbd.STRICT_MASK)
out['strict'] = h.get_strict_mode()
out['has_extended_api'] = hasattr(h, 'set_request_extended_headers')
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
size = h.get_size()
out['size'] = size
out['structured'] = h.get_structured_replies_negotiated()
out['meta'] = h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)

# Pipelined writes of distinct patterns, then pipelined reads: many in flight at once.
BS = 65536
N = 256
cookies = []
for i in range(N):
    buf = nbd.Buffer.from_bytearray(bytearray([i % 251 + 1]) * BS)
    cookies.append(h.aio_pwrite(buf, i * BS))
out['max_in_flight_writes'] = h.aio_in_flight()
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
bufs = []
for i in range(N):
    b = nbd.Buffer(BS)
    bufs.append((i, b, h.aio_pread(b, i * BS)))
out['max_in_flight_reads'] = h.aio_in_flight()
while h.aio_in_flight() > 0:
    h.poll(-1)
bad = 0
for i, b, c in bufs:
    assert h.aio_command_completed(c)
    if b.to_bytearray() != bytearray([i % 251 + 1]) * BS:
        bad += 1
out['bad_reads'] = bad

# Random small I/O checked against a model.
model = bytearray(4 * 1024 * 1024)
base = 32 * 1024 * 1024
rnd = random.Random(7)
for k in range(300):
    off = rnd.randrange(0, len(model) - 5000)
    n = rnd.randrange(1, 5000)
    data = bytes(rnd.getrandbits(8) for _ in range(n))
    h.pwrite(data, base + off, nbd.CMD_FLAG_FUA if k % 3 == 0 else 0)
    model[off:off + n] = data
out['model_ok'] = h.pread(len(model), base) == bytes(model)

# Flush, trim, zero (with NO_HOLE and FAST_ZERO), cache.
h.flush()
h.trim(1024 * 1024, 0)
h.zero(65536, 1024 * 1024, nbd.CMD_FLAG_NO_HOLE)
h.zero(65536, 2 * 1024 * 1024, nbd.CMD_FLAG_FAST_ZERO)
h.cache(1024 * 1024, 0)
out['after_trim'] = h.pread(4096, 0) == bytes(4096)

# Block status: the trimmed start is a hole; what we wrote at 2 MiB is data.
entries = []
def cb(metacontext, offset, e, err):
    entries.append((metacontext, offset, list(e)))
    return 0
h.block_status(8 * 1024 * 1024, 0, cb)
out['bs_first'] = entries[0][2][:6]
out['bs_total'] = sum(entries[0][2][0::2])
entries.clear()
h.block_status(8 * 1024 * 1024, 0, cb, nbd.CMD_FLAG_REQ_ONE)
out['bs_req_one'] = entries[0][2]

# Errors: a read past the end is refused by the server (strict mode off for this).
h.set_strict_mode(0)
try:
    h.pread(4096, size - 1024)
    out['past_end'] = 'ok?!'
except nbd.Error as e:
    out['past_end'] = e.errnum
try:
    h.pwrite(b'x' * 4096, size - 1024)
    out['write_past_end'] = 'ok?!'
except nbd.Error as e:
    out['write_past_end'] = e.errnum
h.shutdown()

# Opt mode: list, info, go, abort.
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(uri)
names = []
h.opt_list(lambda name, desc: names.append((name, desc)) or 0)
out['list'] = names
h.set_export_name('second')
h.opt_info()
out['info_size'] = h.get_size()
out['info_ro'] = h.is_read_only()
ctxs = []
h.opt_list_meta_context(lambda name: ctxs.append(name) or 0)
out['meta_list'] = ctxs
h.set_export_name('missing')
try:
    h.opt_info()
    out['missing'] = 'ok?!'
except nbd.Error as e:
    out['missing'] = str(e)
h.set_export_name('')
h.opt_go()
out['go_size'] = h.get_size()
out['go_read'] = h.pread(512, 200 * 65536)[:4] == bytes([201] * 4)
h.shutdown()

h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(uri)
h.opt_abort()
out['aborted'] = h.aio_is_closed() or h.aio_is_dead()
print(json.dumps(out))
`;

describe('libnbd (python3-libnbd) against our server', () => {
  let srv: OurServer;
  beforeAll(async () => {
    srv = await startOurServer([
      { name: '', description: 'first', size: 64 * MiB, device: new MemoryDevice(64 * MiB) },
      { name: 'second', description: 'read-only second', size: MiB, device: new MemoryDevice(MiB), readOnly: true },
    ]);
  });
  afterAll(async () => srv?.stop());

  it('strict mode, pipelined aio, block status, opt mode', async () => {
    const r = await runPython(SCRIPT, [srv.uri()]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(out.strict).toBe(31);
    // libnbd 1.14 predates extended headers: tested with raw sockets instead.
    expect(out.has_extended_api).toBe(false);
    expect(out.size).toBe(64 * MiB);
    expect(out.structured).toBe(true);
    expect(out.meta).toBe(true);
    expect(out.max_in_flight_writes).toBeGreaterThan(16);
    expect(out.max_in_flight_reads).toBeGreaterThan(16);
    expect(out.bad_reads).toBe(0);
    expect(out.model_ok).toBe(true);
    expect(out.after_trim).toBe(true);
    // python's argument order is (count, offset): 0..1 MiB trimmed (hole), 1 MiB..+64 KiB zeroed
    // with NO_HOLE (stays allocated), 2 MiB..+64 KiB fast-zeroed (hole), then the pipelined writes.
    expect(out.bs_first).toEqual([MiB, 3, MiB, 0, 65536, 3]);
    expect(out.bs_total).toBe(8 * MiB);
    expect(out.bs_req_one).toEqual([MiB, 3]);
    expect(out.past_end).toBe(22); // EINVAL
    expect(out.write_past_end).toBe(28); // ENOSPC
    expect(out.list).toEqual([
      ['', 'first'],
      ['second', 'read-only second'],
    ]);
    expect(out.info_size).toBe(MiB);
    expect(out.info_ro).toBe(true);
    expect(out.meta_list).toContain('base:allocation');
    expect(out.missing).toMatch(/ENOENT/); // libnbd maps NBD_REP_ERR_UNKNOWN to ENOENT
    expect(out.go_size).toBe(64 * MiB);
    expect(out.go_read).toBe(true);
    expect(out.aborted).toBe(true);
  });
});
