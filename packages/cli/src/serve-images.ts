// Disk image files on `nbd serve` and `nbd attach`: `file PATH` serves the bytes as
// they are unless told otherwise, `format=qcow2` (or the `qcow2 PATH` word, or
// --format qcow2) opens the image inside, `format=auto` probes (an image probed raw
// is served read-only). A qcow2 backing file is followed only with backing=follow
// (--backing); backing=none (--no-backing) serves the top layer alone.
import { type ImageFormat, type OpenImageOptions, openImage } from '@nbd/devices';
import { UsageError } from './errors.js';
import type { BuildContext, Built, DeviceWord, Params } from './serve-params.js';

/** Builds `file PATH [format=…] [backing=…] [l2-cache-size=…] [direct=…]`. */
export async function buildImage(path: string, params: Params, ctx: BuildContext, format?: ImageFormat): Promise<Built> {
  const asked = format ?? params.take('format') ?? 'raw';
  if (asked !== 'raw' && asked !== 'qcow2' && asked !== 'auto')
    throw new UsageError(ctx.command, `format=${asked}: expected raw, qcow2 or auto`);
  const backing = params.take('backing');
  if (backing !== undefined && backing !== 'follow' && backing !== 'none')
    throw new UsageError(ctx.command, `backing=${backing}: expected follow or none`);
  if (asked === 'raw' && backing !== undefined) throw new UsageError(ctx.command, `backing=${backing} needs a qcow2 image (format=qcow2)`);
  const opts: OpenImageOptions = { format: asked, readOnly: ctx.readOnly, direct: params.flag('direct') ?? false };
  if (backing !== undefined) opts.backing = backing;
  const l2 = params.size('l2-cache-size');
  if (l2 !== undefined) opts.l2CacheSize = l2;
  const image = await openImage(path, opts);
  const what = image.format === 'qcow2' ? `${path} (qcow2${image.probed ? ', probed' : ''})` : path;
  return { device: image.device, size: image.device.size, description: what };
}

/** The `qcow2 PATH` device word: `file PATH format=qcow2`. */
export const QCOW2_WORD: DeviceWord = {
  arity: 1,
  usage: 'qcow2 PATH [backing=follow|none]',
  summary: 'a qcow2 image, read-write (qemu-nbd -f qcow2; nbdkit qcow2dec reads)',
  build: (arg, params, ctx) => {
    const path = arg ?? params.take('file');
    if (path === undefined) throw new UsageError(ctx.command, 'qcow2 needs a PATH');
    return buildImage(path, params, ctx, 'qcow2');
  },
};
