// The command as a whole: help and version everywhere, usage errors, a closed pipe
// ending quietly, colour only on a terminal without NO_COLOR, NBD_DEBUG stacks, and
// the progress bar in a pseudo-terminal (script(1) from util-linux).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { PATH, type Peer, requireTool, startNbdkit } from '../support/peers.js';
import { scoped } from '../support/scoped.js';
import { NBD_SHELL, nbd, startNbdServe } from './support.js';

const s = scoped('nbd-cli-');

async function peer(p: Promise<Peer>): Promise<Peer> {
  const started = await p;
  s.defer(() => started.stop());
  return started;
}

/** Runs a shell script (bash, for PIPESTATUS), optionally inside a pseudo-terminal via script(1). */
function sh(
  script: string,
  opts: { tty?: boolean; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const [cmd, args] = opts.tty ? [requireTool('script'), ['-qefc', script, '/dev/null']] : ['/bin/bash', ['-c', script]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, PATH, TERM: 'xterm', ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('nbd', () => {
  test('--help and --version for the command and each subcommand; usage errors exit 2', async () => {
    const version = (JSON.parse(readFileSync(new URL('../../packages/cli/package.json', import.meta.url), 'utf8')) as { version: string })
      .version;
    expect((await nbd(['--version'])).stdout).toBe(`nbd ${version}\n`);
    const top = await nbd(['--help']);
    expect(top.code).toBe(0);
    for (const c of ['serve', 'info', 'copy', 'attach', 'detach', 'devices']) {
      expect(top.stdout).toContain(`  ${c} `);
      const h = await nbd([c, '--help']);
      expect({ c, code: h.code }).toEqual({ c, code: 0 });
      expect(h.stdout).toMatch(new RegExp(`^Usage: nbd ${c}`));
      expect(h.stderr).toBe('');
      expect((await nbd([c, '-V'])).stdout).toBe(`nbd ${version}\n`);
    }
    const bare = await nbd([]);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toMatch(/^Usage: nbd COMMAND/);
    const unknown = await nbd(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe(
      "nbd: unknown command 'frobnicate' (commands: serve, info, copy, attach, detach, devices) (see 'nbd --help')\n",
    );
  });

  test('a reader that goes away (| head) ends the command quietly', async () => {
    const p = await peer(startNbdkit(['sparse-random', '64M', 'runlength=4096', 'percent=50']));
    const map = await sh(`${NBD_SHELL} info --map '${p.uri}' | head -1; echo "status=\${PIPESTATUS[0]}" >&2`);
    expect(map.stdout.trim().split('\n')).toHaveLength(1);
    expect(map.stderr).toMatch(/^status=(0|141)\n$/);
    const copy = await sh(`${NBD_SHELL} copy '${p.uri}' - | head -c 1000 | wc -c; echo "status=\${PIPESTATUS[0]}" >&2`);
    expect(copy.stdout.trim()).toBe('1000');
    expect(copy.stderr).toBe('status=141\n');
  });

  test('colour on a terminal, none with NO_COLOR or in a pipe; NBD_DEBUG adds the stack', async () => {
    const p = await peer(startNbdServe(['memory', '1M']));
    const cmd = `${NBD_SHELL} info '${p.uri}'`;
    const esc = '\x1b[';
    expect((await sh(cmd, { tty: true, env: { NO_COLOR: '' } })).stdout).toContain(esc);
    expect((await sh(cmd, { tty: true, env: { NO_COLOR: '1' } })).stdout).not.toContain(esc);
    expect((await sh(cmd, { env: { NO_COLOR: '' } })).stdout).not.toContain(esc);
    const plain = await nbd(['info', 'nbd+unix:///?socket=/nonexistent']);
    expect(plain.stderr.trim().split('\n')).toHaveLength(1);
    const debug = await nbd(['info', 'nbd+unix:///?socket=/nonexistent'], { env: { NBD_DEBUG: '1' } });
    expect(debug.code).toBe(1);
    expect(debug.stderr).toMatch(/^nbd info: cannot connect to \/nonexistent/m);
    expect(debug.stderr).toMatch(/^nbd info: trace: connecting to /);
    expect(debug.stderr).toMatch(/\n\s+at /);
    expect(debug.stderr).toMatch(/caused by: Error: connect ENOENT/);
  });

  test('in a pseudo-terminal, --progress draws one bar redrawn at most ~10 times a second, then a summary line', async () => {
    // 40 MiB read 512 KiB at a time, two requests in flight, each delayed 50 ms by nbdkit: about two seconds.
    const p = await peer(startNbdkit(['--filter=delay', 'pattern', '40M', 'rdelay=50ms']));
    const t0 = performance.now();
    const r = await sh(`${NBD_SHELL} copy --progress -C 1 -R 2 '${p.uri}' null:`, { tty: true, env: { NO_COLOR: '1' } });
    const seconds = (performance.now() - t0) / 1000;
    expect(r.code).toBe(0);
    const draws = r.stdout.match(/\d+% \[[*-]{10,40}\]/g) ?? [];
    expect(draws.length).toBeGreaterThanOrEqual(3);
    expect(draws.length).toBeLessThanOrEqual(Math.ceil(seconds * 10) + 2);
    // One line, rewritten in place: the bar never starts a new line until it is complete.
    const lines = r.stdout.split(/\r?\n/).filter((l) => l.trim() !== '');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/█ 100% \[\*{10,40}\] 40\.0 MiB\/40\.0 MiB/);
    // Each redraw (after the cursor's move to column 1) fits an 80-column terminal.
    const ansi = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*[A-Za-z]`, 'g');
    for (const draw of lines[0]!.split(`${String.fromCharCode(27)}[1G`)) expect(draw.replace(ansi, '').length).toBeLessThan(80);
    expect(lines[1]).toMatch(/^nbd copy: copied 40\.0 MiB in \d+\.\d\d s \([\d.]+ MiB\/s\)$/);
  });
});
