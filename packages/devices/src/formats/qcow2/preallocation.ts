// Two pieces of qemu-compatible block status: extents of equal flags merged into one
// (a REQ_ONE answer covers as much as it can), and qemu's test for a metadata-
// preallocated image, whose data clusters over holes of the file then read as zeroes.
import { stat } from 'node:fs/promises';
import type { DeviceExtent } from '@nbd/server';
import { FileDevice } from '../../file/file-device.js';
import type { QcowDevice } from './qcow-device.js';

/** Extents with equal flags side by side made one. */
export function merged(extents: DeviceExtent[]): DeviceExtent[] {
  const out: DeviceExtent[] = [];
  for (const e of extents) {
    const last = out[out.length - 1];
    if (last?.flags === e.flags) last.length += e.length;
    else out.push({ ...e });
  }
  return out;
}

/**
 * qemu's test for metadata preallocation: at least ~10/9 as many clusters have a
 * refcount as the file really holds (st_blocks, or what its extents say is data).
 */
export async function detectPreallocation(d: QcowDevice, path: string | undefined): Promise<boolean> {
  const file = d.io.device;
  if (file.extents === undefined) return false;
  const C = d.clusterSize;
  let allocated = 0;
  if (path !== undefined && file instanceof FileDevice && file.kind === 'file') allocated = (await stat(path)).blocks * 512;
  else {
    const opts = { fua: false, signal: new AbortController().signal, reqOne: false };
    for (let at = 0; at < d.io.length; ) {
      const ex = await file.extents(at, Math.min(d.io.length - at, 1 << 30), opts);
      if (ex.length === 0) break;
      for (const e of ex) {
        if ((e.flags & 1) === 0) allocated += e.length;
        at += e.length;
      }
    }
  }
  const real = Math.floor(allocated / C);
  const threshold = Math.max(Math.floor((real * 10) / 9), real + 2);
  let count = 0;
  for (let c = 0; c < Math.ceil(d.io.length / C) && count < threshold; c++) if ((await d.meta.refcounts.get(c)) !== 0) count++;
  return count >= threshold;
}
