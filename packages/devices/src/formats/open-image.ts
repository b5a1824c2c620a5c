// Disk image files by format: raw (the bytes as they are), qcow2, or 'auto'. The
// format the user names is never second-guessed: a raw file that happens to start
// with a qcow2 header is served raw (qemu's probing lesson: a guest could write a
// header naming a host file as its backing file). 'auto' probes the magic only when
// asked, and an image probed as raw is only ever served read-only.
import { NbdInvalidArgumentError } from '@nbd/protocol';
import { FileDevice } from '../file/file-device.js';
import type { BackingOption } from './qcow2/backing.js';
import { hasQcowMagic } from './qcow2/layout.js';
import { openQcow2, type QcowDevice } from './qcow2/qcow-device.js';

/** Image formats by name. */
export type ImageFormat = 'raw' | 'qcow2';

/** Options of {@link openImage}. */
export interface OpenImageOptions {
  /** The format; 'auto' probes the file's magic (default 'raw'). */
  format?: ImageFormat | 'auto';
  readOnly?: boolean;
  /** qcow2: follow the backing file, serve the layer alone, or give it (see QcowOptions.backing). */
  backing?: BackingOption;
  /** O_DIRECT (raw, and the qcow2 file itself). */
  direct?: boolean;
  /** qcow2: L2 and refcount cache sizes in bytes. */
  l2CacheSize?: number;
  refcountCacheSize?: number;
  signal?: AbortSignal;
}

/** An opened image: the device to serve and the format it has. */
export interface OpenedImage {
  device: FileDevice | QcowDevice;
  format: ImageFormat;
  /** The format was probed ('auto'), not named. */
  probed: boolean;
}

/** The format a file's first bytes say (qcow2 magic, else raw). */
export async function probeFormat(path: string): Promise<ImageFormat> {
  const file = await FileDevice.open(path, { readOnly: true });
  try {
    const magic = new Uint8Array(4);
    if (file.size >= 4) await file.readAt(magic, 0);
    return hasQcowMagic(magic) ? 'qcow2' : 'raw';
  } finally {
    await file.close();
  }
}

/** Opens a disk image file as a device, in the format named (or probed, read-only if raw). */
export async function openImage(path: string, opts: OpenImageOptions = {}): Promise<OpenedImage> {
  const asked = opts.format ?? 'raw';
  if (asked !== 'raw' && asked !== 'qcow2' && asked !== 'auto')
    throw new NbdInvalidArgumentError(`image format '${String(asked)}': expected raw, qcow2 or auto`);
  const format = asked === 'auto' ? await probeFormat(path) : asked;
  const probed = asked === 'auto';
  if (format === 'raw') {
    if (probed && opts.readOnly !== true)
      throw new NbdInvalidArgumentError(
        `${path} has no qcow2 header: an image whose format was probed as raw is only served read-only (name the format raw to write it)`,
      );
    const device = await FileDevice.open(path, { readOnly: opts.readOnly === true, direct: opts.direct, signal: opts.signal });
    return { device, format, probed };
  }
  const device = await openQcow2(path, {
    readOnly: opts.readOnly,
    backing: opts.backing,
    direct: opts.direct,
    l2CacheSize: opts.l2CacheSize,
    refcountCacheSize: opts.refcountCacheSize,
    signal: opts.signal,
  });
  return { device, format, probed };
}
