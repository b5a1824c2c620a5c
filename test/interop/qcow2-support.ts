// Helpers for the qcow2 interop tests: images made and written by a given qemu's
// qemu-img and qemu-io, our server over a QcowDevice beside that qemu's qemu-nbd on
// the same image, and the answers to compare (content, maps, allocation depth).

import { type OpenQcow2Options, openQcow2, type QcowDevice } from '@nbd/devices';
import { expect } from 'vitest';
import { type Peer, run, runOk } from '../support/peers.js';
import { type QemuInstall, qemuTool, startQemuNbdOf } from '../support/qemu.js';
import { type OurServer, startOurServer } from './server-support.js';

export const MiB = 1024 * 1024;

/** `qemu-img create -f qcow2 [-o opts] path size` with this qemu. */
export async function createImage(q: QemuInstall, path: string, size: string | number, opts: readonly string[] = [], extra: string[] = []) {
  const o = opts.length > 0 ? ['-o', opts.join(',')] : [];
  await runOk(qemuTool(q, 'qemu-img'), ['create', '-q', '-f', 'qcow2', ...o, ...extra, path, String(size)]);
}

/** Runs qemu-io commands on an image (format qcow2 unless `format` says otherwise). */
export async function qemuIo(q: QemuInstall, target: string, cmds: string[], format = 'qcow2'): Promise<string> {
  const out = await runOk(qemuTool(q, 'qemu-io'), ['-f', format, ...cmds.flatMap((c) => ['-c', c]), target]);
  if (/error|failed/i.test(out)) throw new Error(`qemu-io ${cmds.join('; ')}: ${out}`);
  return out;
}

/** Our server over the qcow2 image at `path`; `stop` closes the device too. */
export async function serveQcow(
  path: string,
  opts: OpenQcow2Options = {},
): Promise<{ server: OurServer; device: QcowDevice; uri: string; stop: () => Promise<void> }> {
  const device = await openQcow2(path, opts);
  const server = await startOurServer([{ name: '', size: device.size, device }]);
  return {
    server,
    device,
    uri: server.uri(),
    stop: async () => {
      await server.stop();
      await device.close();
    },
  };
}

/** That qemu's qemu-nbd on the image, with allocation depth (-A). */
export function qemuNbd(q: QemuInstall, image: string, opts: string[] = []): Promise<Peer> {
  return startQemuNbdOf(q, image, ['-A', ...opts]);
}

/** `qemu-img compare` of our export (raw) against the image (qcow2 or a json: spec); asserts identical. */
export async function expectSameContent(q: QemuInstall, uri: string, image: string, format = 'qcow2'): Promise<void> {
  const r = await run(qemuTool(q, 'qemu-img'), ['compare', '-f', 'raw', '-F', format, uri, image]);
  expect(r.stdout + r.stderr).toContain('Images are identical');
  expect(r.code).toBe(0);
}

/** `nbdinfo --map` (base:allocation, or another context) of an export. */
export const mapOf = (uri: string, context?: string) => runOk('nbdinfo', [context ? `--map=${context}` : '--map', uri]);

/** Our device's allocation depth as `offset length depth` lines, equal neighbours merged. */
export async function depthMapOf(device: QcowDevice): Promise<string> {
  const runs: [number, number, number][] = [];
  for (let at = 0; at < device.size; ) {
    const got = await device.allocationDepth(at, device.size - at);
    if (got.length === 0) throw new Error(`allocationDepth(${at}) returned nothing`);
    for (const r of got) {
      runs.push([at, r.length, r.depth]);
      at += r.length;
    }
  }
  return merged(runs);
}

/** nbdinfo's `--map=qemu:allocation-depth` output as `offset length depth` lines, equal neighbours merged. */
export function depthLines(nbdinfoMap: string): string {
  const runs = nbdinfoMap
    .trim()
    .split('\n')
    .map((l) => l.trim().split(/\s+/).slice(0, 3).map(Number) as [number, number, number]);
  return merged(runs);
}

function merged(runs: [number, number, number][]): string {
  const out: [number, number, number][] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last !== undefined && last[2] === r[2]) last[1] += r[1];
    else out.push([...r]);
  }
  return out.map((r) => r.join(' ')).join('\n');
}

/** `qemu-img check` output; asserts no errors and no leaks unless `leaksAllowed`. */
export async function expectCheckClean(q: QemuInstall, image: string, leaksAllowed = false): Promise<string> {
  const r = await run(qemuTool(q, 'qemu-img'), ['check', image]);
  const out = r.stdout + r.stderr;
  if (leaksAllowed) expect(r.code === 0 || r.code === 3, out).toBe(true);
  else {
    expect(out).toContain('No errors were found on the image');
    expect(r.code, out).toBe(0);
  }
  expect(out).not.toMatch(/\bERROR\b|corrupt/);
  return out;
}
