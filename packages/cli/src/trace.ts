// `nbd serve -v`: a protocol trace of every request a device gets (command, offset,
// length, flags, milliseconds, error), on stderr. Wrapping drops zero-copy lending,
// so traced reads go through readAt.
import { after } from '@nbd/protocol';
import type { Device, DeviceExtent } from '@nbd/server';

type Log = (line: string) => void;

/** Calls `fn` and logs one line when it settles. */
function traced<T>(log: Log, what: string, fn: () => T | Promise<T>, summary?: (r: T) => string): T | Promise<T> {
  const t0 = performance.now();
  const done = (r: T) => {
    log(`${what}${summary ? ` ${summary(r)}` : ''} (${(performance.now() - t0).toFixed(2)} ms)`);
    return r;
  };
  const fail = (e: unknown): never => {
    log(`${what} failed: ${(e as Error).message} (${(performance.now() - t0).toFixed(2)} ms)`);
    throw e;
  };
  let r: T | Promise<T>;
  try {
    r = fn();
  } catch (e) {
    return fail(e);
  }
  return after(r, done, fail);
}

/** A device that logs every call of `d` under `name`. */
export function traceDevice(d: Device, name: string, log: Log): Device {
  const at = (cmd: string, offset: number, length: number, flags = '') => `"${name}": ${cmd} ${offset}+${length}${flags}`;
  const fua = (o: { fua: boolean }) => (o.fua ? ' FUA' : '');
  const t: Device = {
    readAt: (buf, offset, opts) => traced(log, at('READ', offset, buf.length), () => d.readAt(buf, offset, opts)),
  };
  const props = ['size', 'readOnly', 'rotational', 'multiConn', 'fua', 'blockSizes'] as const;
  for (const p of props) if (d[p] !== undefined) Object.defineProperty(t, p, { value: d[p], enumerable: true });
  if (d.writeAt)
    t.writeAt = (buf, offset, opts) => traced(log, at('WRITE', offset, buf.length, fua(opts)), () => d.writeAt!(buf, offset, opts));
  if (d.sync) t.sync = (opts) => traced(log, `"${name}": FLUSH`, () => d.sync!(opts));
  if (d.trim) t.trim = (offset, length, opts) => traced(log, at('TRIM', offset, length, fua(opts)), () => d.trim!(offset, length, opts));
  if (d.zero) {
    t.zero = (offset, length, opts) =>
      traced(log, at('WRITE_ZEROES', offset, length, `${fua(opts)}${opts.noHole ? ' NO_HOLE' : ''}${opts.fast ? ' FAST_ZERO' : ''}`), () =>
        d.zero!(offset, length, opts),
      );
  }
  if (d.cache) t.cache = (offset, length, opts) => traced(log, at('CACHE', offset, length), () => d.cache!(offset, length, opts));
  if (d.extents) {
    t.extents = (offset, length, opts) =>
      traced(
        log,
        at('BLOCK_STATUS', offset, length, opts.reqOne ? ' REQ_ONE' : ''),
        () => d.extents!(offset, length, opts),
        (r: DeviceExtent[]) => `→ ${r.length} extents`,
      );
  }
  if (d.close) t.close = () => d.close!();
  return t;
}
