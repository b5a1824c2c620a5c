// The qemu installs the interop tests run against: Debian 12's qemu 7.2 (qemu-utils)
// and bookworm-backports' qemu 10.0, which scripts/bootstrap.sh --peers unpacks into
// ~/.cache/nbd-qemu-10 (never installed). Tests `describe.each(EACH_QEMU)` and name the
// version in their titles; a missing or wrong install fails the test, never skips it.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { PATH, type Peer, startServer } from './peers.js';

export type QemuTool = 'qemu-img' | 'qemu-io' | 'qemu-nbd' | 'qemu-storage-daemon';

export interface QemuInstall {
  /** "7.2" or "10.0": the major.minor that `--version` must report. */
  version: string;
  /** Directory holding qemu-img, qemu-io, qemu-nbd and qemu-storage-daemon. */
  bin: string;
  /** How to get it, for the failure message. */
  install: string;
  /** Negotiates NBD_OPT_EXTENDED_HEADERS (qemu ≥ 8.2, both as client and server). */
  extendedHeaders: boolean;
}

const cacheRoot = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');

export const QEMU_7_2: QemuInstall = {
  version: '7.2',
  bin: '/usr/bin',
  install: 'apt-get install qemu-utils qemu-system-common (scripts/bootstrap.sh --peers --vm)',
  extendedHeaders: false,
};

export const QEMU_10: QemuInstall = {
  version: '10.0',
  bin: join(process.env.NBD_QEMU10_DIR ?? join(cacheRoot, 'nbd-qemu-10'), 'usr/bin'),
  install: 'scripts/bootstrap.sh --peers (qemu-utils from bookworm-backports, unpacked into ~/.cache/nbd-qemu-10)',
  extendedHeaders: true,
};

/** Every install, oldest first. */
export const QEMUS: readonly QemuInstall[] = [QEMU_7_2, QEMU_10];
/** `describe.each(EACH_QEMU)('… qemu %s', (_version, q) => …)` names the version unquoted. */
export const EACH_QEMU: readonly (readonly [string, QemuInstall])[] = QEMUS.map((q) => [q.version, q] as const);

const checked = new Map<string, string>();

/** Absolute path of `tool` of this install; throws unless it exists and reports the install's version. */
export function qemuTool(q: QemuInstall, tool: QemuTool): string {
  const path = join(q.bin, tool);
  const hit = checked.get(path);
  if (hit !== undefined) return hit;
  if (!existsSync(path)) throw new Error(`qemu ${q.version}: ${path} is missing: ${q.install}`);
  const out = execFileSync(path, ['--version'], { encoding: 'utf8', env: { ...process.env, PATH } });
  const first = out.split('\n')[0] ?? '';
  if (!first.includes(` ${q.version}.`)) throw new Error(`qemu ${q.version}: ${path} reports "${first}": ${q.install}`);
  checked.set(path, path);
  return path;
}

/** `qemu-nbd` of this install serving `image` on a unix socket (persistent, up to 16 clients unless `opts` say otherwise). */
export function startQemuNbdOf(q: QemuInstall, image: string, opts: string[] = [], exportName = ''): Promise<Peer> {
  const shared = opts.includes('-e') || opts.some((o) => o.startsWith('--shared')) ? [] : ['-e', '16'];
  return startServer(qemuTool(q, 'qemu-nbd'), ['-k', '{SOCK}', '-t', ...shared, '-x', exportName, ...opts, image], exportName);
}

/**
 * `qemu-storage-daemon` of this install with the given `--blockdev` specs, exporting node
 * `node` over NBD on a unix socket as `exportName` (writable unless `readOnly`).
 * E.g. a blockdev `driver=nbd,server.type=unix,server.path=…` makes it a client of another server.
 */
export function startStorageDaemon(
  q: QemuInstall,
  blockdevs: string[],
  node: string,
  exportName = 'disk',
  readOnly = false,
): Promise<Peer> {
  return startServer(
    qemuTool(q, 'qemu-storage-daemon'),
    [
      ...blockdevs.flatMap((b) => ['--blockdev', b]),
      '--nbd-server',
      'addr.type=unix,addr.path={SOCK}',
      '--export',
      `type=nbd,id=exp0,node-name=${node},name=${exportName},writable=${readOnly ? 'off' : 'on'}`,
    ],
    exportName,
  );
}
