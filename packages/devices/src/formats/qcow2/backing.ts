// Backing files. A name is resolved as qemu resolves it (an absolute path as it is, a
// relative one against the directory of the image that names it, `file:` stripped;
// other protocols are refused), and followed only when the caller allowed it: a
// hostile image must not make us open /etc/shadow or a device node. The format comes
// from the backing-format extension (raw or qcow2), else from the magic, as qemu does
// for old images. Loops (by real path) and chains deeper than a limit are refused.
import { realpath } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import type { Device } from '@nbd/server';
import { FileDevice } from '../../file/file-device.js';
import { corrupt, unsupported } from './errors.js';
import { hasQcowMagic } from './layout.js';

/**
 * What to do with a backing file: `'follow'` opens it (and its own backing files) by
 * name; `'none'` serves this layer alone (unallocated clusters read as zeroes); a
 * Device is the backing file; a function opens it from the recorded name and format.
 */
export type BackingOption = 'follow' | 'none' | Device | ((name: string, format: string | undefined) => Promise<Device>);

/** How deep a chain `'follow'` goes by default. */
export const DEFAULT_MAX_BACKING_DEPTH = 32;

/** Opens a qcow2 image over a file: injected to avoid a module cycle. */
export type QcowOpener = (file: Device, path: string, chain: string[]) => Promise<Device>;

/** The file a backing name refers to, relative to the image at `imagePath`. */
export function resolveBackingName(name: string, imagePath: string | undefined, image: string): string {
  let path = name;
  if (path.startsWith('file:')) path = path.slice(5);
  else if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(path) && !path.startsWith('/'))
    throw unsupported(image, `backing file "${name}" uses a protocol; open it yourself and pass it as the backing device`);
  if (isAbsolute(path)) return path;
  if (imagePath === undefined)
    throw new NbdInvalidArgumentError(`qcow2 ${image}: the backing file "${name}" is relative; give the image's path to resolve it`);
  return join(dirname(imagePath), path);
}

/** Opens the backing file `name` of the image at `imagePath` (chain: real paths of the images above, top first). */
export async function followBacking(
  name: string,
  format: string | undefined,
  imagePath: string | undefined,
  image: string,
  chain: string[],
  maxDepth: number,
  openQcow: QcowOpener,
): Promise<Device> {
  const path = resolveBackingName(name, imagePath, image);
  let real: string;
  try {
    real = await realpath(path);
  } catch (e) {
    throw corrupt(image, `backing file "${name}" (${path}) cannot be opened: ${(e as Error).message}`, e);
  }
  if (chain.includes(real)) throw corrupt(image, `backing file loop: ${[...chain, real].join(' -> ')}`);
  if (chain.length >= maxDepth) throw corrupt(image, `the backing chain is deeper than ${maxDepth} images`);
  if (format !== undefined && format !== 'raw' && format !== 'qcow2')
    throw unsupported(image, `backing file "${name}" has format ${format} (only raw and qcow2 are supported)`);
  const file = await FileDevice.open(path, { readOnly: true });
  try {
    let kind = format;
    if (kind === undefined) {
      const magic = new Uint8Array(4);
      if (file.size >= 4) await file.readAt(magic, 0);
      kind = hasQcowMagic(magic) ? 'qcow2' : 'raw';
    }
    if (kind === 'raw') return file;
    return await openQcow(file, path, [...chain, real]);
  } catch (e) {
    await file.close();
    throw e;
  }
}
