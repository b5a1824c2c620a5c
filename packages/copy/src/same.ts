// A copy onto its own source destroys it (a destination file is truncated first; an
// export is overwritten while it is read). Refused unless asked for: the same file
// (device and inode), block device (device number) or export (server address and
// export name). A URI whose server serves the very file named as the other end cannot
// be told apart from any other export.
import type { Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import { toNbdUri } from '@nbd/node';
import { NbdInvalidArgumentError } from '@nbd/protocol';
import { type CopyEndpoint, describeEndpoint, type Kind, kindOf } from './endpoints.js';

/** What a file is, whatever its name: a block device by its number, anything else by device and inode. */
function fileKey(st: Stats | undefined): string | undefined {
  if (st === undefined) return undefined;
  return st.isBlockDevice() ? `block device ${st.rdev}` : `file ${st.dev}:${st.ino}`;
}

async function statOf(get: () => Promise<Stats>): Promise<Stats | undefined> {
  try {
    return await get();
  } catch {
    return undefined; // not there (a destination yet to be created): nothing to destroy
  }
}

/** The same name for the loopback addresses. */
function hostKey(host: string | undefined): string {
  const h = (host ?? 'localhost').toLowerCase();
  return h === '127.0.0.1' || h === '::1' ? 'localhost' : h;
}

/** An export by its server's address (a unix socket by its inode) and its name. */
async function exportKey(k: Extract<Kind, { kind: 'connect' }>): Promise<string | undefined> {
  if (typeof k.target !== 'string' && !(k.target instanceof URL) && typeof (k.target as { on?: unknown }).on === 'function')
    return undefined;
  let uri: ReturnType<typeof toNbdUri>;
  try {
    uri = toNbdUri(k.target as Parameters<typeof toNbdUri>[0]);
  } catch {
    return undefined; // connecting says what is wrong with it
  }
  if (uri.transport === 'unix') {
    const socket = uri.socket ?? '';
    const st = socket.startsWith('\0') ? undefined : await statOf(() => stat(socket));
    return `export ${JSON.stringify(uri.exportName)} on ${st ? `socket ${st.dev}:${st.ino}` : `socket ${socket}`}`;
  }
  return `export ${JSON.stringify(uri.exportName)} on ${uri.transport} ${hostKey(uri.host)}:${uri.port ?? 10809}`;
}

/** A key equal for two endpoints that are the same file or export; undefined when nothing can be told. */
async function keyOf(k: Kind, stdio: 0 | 1): Promise<string | object | undefined> {
  switch (k.kind) {
    case 'file':
      return fileKey(await statOf(() => stat(k.path)));
    case 'handle':
      return fileKey(await statOf(() => k.fh.stat()));
    case 'stdio':
      return fileKey(await statOf(() => stat(`/proc/self/fd/${stdio}`)));
    case 'connect':
      return exportKey(k);
    case 'nbd':
      return k.conn; // the same open connection
    default:
      return undefined;
  }
}

/**
 * Throws when `dst` is `src` itself (the same file, block device or export). Returns
 * true when it is and `allow` says go on: the destination is then not truncated.
 */
export async function checkSame(src: CopyEndpoint, dst: CopyEndpoint, allow: boolean): Promise<boolean> {
  const [a, b] = await Promise.all([keyOf(kindOf(src), 0), keyOf(kindOf(dst), 1)]);
  if (a === undefined || a !== b) return false;
  if (allow) return true;
  const what = typeof a === 'string' ? a.split(' ')[0] : 'connection';
  throw new NbdInvalidArgumentError(
    `copy: the source and the destination are the same ${what === 'block' ? 'block device' : what} ` +
      `(${describeEndpoint(src, 'source')} and ${describeEndpoint(dst, 'destination')}): refusing to copy it onto itself; ` +
      'allowSame (nbd copy --allow-same) does, in place',
  );
}
