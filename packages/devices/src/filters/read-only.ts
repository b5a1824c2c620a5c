// A read-only view (nbdkit -r, or qemu-nbd -r): no writeAt, trim or zero below the
// server, so the export is read-only whatever the device below can do.
import type { Device } from '@nbd/server';
import { layer } from './layer.js';

/** `base` without its write methods. */
export function readOnly(base: Device): Device {
  return layer(
    base,
    'read-only',
    {},
    {
      readOnly: true,
      fua: undefined,
      readAt: (buf, at, o) => base.readAt(buf, at, o),
      lend: base.lend && ((at, n) => base.lend!(at, n)),
      sync: base.sync && ((o) => base.sync!(o)),
      cache: base.cache && ((at, n, o) => base.cache!(at, n, o)),
      extents: base.extents && ((at, n, o) => base.extents!(at, n, o)),
    },
  );
}
