// `nbd info FILE`: what a disk image file is, as `qemu-img info` says it (the same
// JSON keys): its format (probed from the magic, never followed further), virtual
// size, and for qcow2 the cluster size, compat level, features and backing file,
// whose name is reported but not opened.
import { stat } from 'node:fs/promises';
import { openImage, probeFormat, type QcowInfo } from '@nbd/devices';

/** True when `text` names a regular file or a block device (so `nbd info` describes the image in it). */
export async function isImageFile(text: string): Promise<boolean> {
  try {
    const st = await stat(text);
    return st.isFile() || st.isBlockDevice();
  } catch {
    return false;
  }
}

/** qemu-img info's text or JSON for the image at `path`. */
export async function imageInfo(path: string, json: boolean): Promise<string> {
  const format = await probeFormat(path);
  const actual = (await stat(path)).blocks * 512;
  const image = await openImage(path, { format, readOnly: true, backing: 'none' });
  try {
    const q = format === 'qcow2' ? (image.device as { info(): QcowInfo }).info() : undefined;
    const size = image.device.size;
    return json ? toJson(path, format, size, actual, q) : toText(path, format, size, actual, q);
  } finally {
    await image.device.close();
  }
}

function toJson(path: string, format: string, size: number, actual: number, q: QcowInfo | undefined): string {
  const o: Record<string, unknown> = { 'virtual-size': size, filename: path, format, 'actual-size': actual };
  if (q !== undefined) {
    o['cluster-size'] = q.clusterSize;
    o['dirty-flag'] = q.dirty;
    if (q.backingFile !== undefined) o['backing-filename'] = q.backingFile;
    if (q.backingFormat !== undefined) o['backing-filename-format'] = q.backingFormat;
    o['format-specific'] = {
      type: 'qcow2',
      data: {
        compat: q.compat,
        'compression-type': q.compressionType,
        'lazy-refcounts': q.lazyRefcounts,
        'refcount-bits': q.refcountBits,
        corrupt: q.corrupt,
        'extended-l2': q.extendedL2,
      },
    };
    if (q.snapshots > 0) o.snapshots = q.snapshots;
  }
  return `${JSON.stringify(o, null, 4)}\n`;
}

function toText(path: string, format: string, size: number, actual: number, q: QcowInfo | undefined): string {
  const lines = [`image: ${path}`, `file format: ${format}`, `virtual size: ${human(size)} (${size} bytes)`, `disk size: ${human(actual)}`];
  if (q !== undefined) {
    lines.push(`cluster_size: ${q.clusterSize}`);
    if (q.backingFile !== undefined) lines.push(`backing file: ${q.backingFile}`);
    if (q.backingFormat !== undefined) lines.push(`backing file format: ${q.backingFormat}`);
    if (q.snapshots > 0) lines.push(`snapshots: ${q.snapshots} (internal)`);
    lines.push(
      'Format specific information:',
      `    compat: ${q.compat}`,
      `    compression type: ${q.compressionType}`,
      `    lazy refcounts: ${q.lazyRefcounts}`,
      `    refcount bits: ${q.refcountBits}`,
      `    corrupt: ${q.corrupt}`,
      `    extended l2: ${q.extendedL2}`,
    );
    if (q.dirty) lines.push('    dirty: true (lazy refcounts to repair: qemu-img check -r all)');
  }
  return `${lines.join('\n')}\n`;
}

/** Sizes as qemu-img prints them: "64 MiB", "1.5 GiB". */
function human(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${Number(v.toPrecision(3))} ${units[u]}`;
}
