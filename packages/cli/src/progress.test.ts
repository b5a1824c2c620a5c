import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { barLine, FdProgress, LineProgress, REDRAW_MS, TerminalBar } from './progress.js';

function sink() {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  return { out: Object.assign(out, { columns: 100 }), text: () => text };
}

describe('progress', () => {
  test('the terminal bar redraws at most every REDRAW_MS however often it is told', () => {
    let now = 0;
    const s = sink();
    const bar = new TerminalBar(s.out, true, () => now);
    for (let i = 0; i <= 16384; i++) {
      now = i; // 16 385 updates over 16.4 s
      bar.update(i * 512 * 1024, 16384 * 512 * 1024);
    }
    bar.finish(16384 * 512 * 1024, 16384 * 512 * 1024);
    const draws = s.text().match(/% \[/g)!.length;
    expect(draws).toBeLessThanOrEqual(Math.ceil(16384 / REDRAW_MS) + 2);
    expect(s.text().endsWith('\n')).toBe(true);
    expect(s.text().split('\n')).toHaveLength(2);
  });

  test('bar lines fit the width and say what is known', () => {
    expect(barLine(512, 1024, 1, 0, 80)).toMatch(/^▝ {2}50% \[\*+-+\] 512 B\/1\.0 KiB 512 B\/s ETA 0:01$/);
    expect(barLine(1024, 1024, 2, 3, 80)).toMatch(/^█ 100% \[\*+\] 1\.0 KiB\/1\.0 KiB 512 B\/s$/);
    expect(barLine(1 << 20, undefined, 1, 1, 80)).toBe('▐ 1.0 MiB 1.0 MiB/s');
    for (const w of [40, 60, 80, 120]) expect(barLine(3 << 30, 8 << 30, 9, 0, w).length).toBeLessThan(Math.max(w, 21));
  });

  test("plain lines every 10 %, and nbdcopy's N/100 on a descriptor, once per value", () => {
    const s = sink();
    const lines = new LineProgress(s.out);
    for (let i = 0; i <= 1000; i++) lines.update(i, 1000);
    expect(s.text().trim().split('\n')).toHaveLength(11);
    const dir = mkdtempSync(join(tmpdir(), 'nbd-progress-'));
    try {
      const fd = openSync(join(dir, 'p'), 'w');
      const p = new FdProgress(fd);
      for (let i = 0; i <= 999; i++) p.update(i, 1000);
      p.finish();
      closeSync(fd);
      const got = readFileSync(join(dir, 'p'), 'utf8').trim().split('\n');
      expect(got).toEqual([...Array.from({ length: 100 }, (_, i) => `${i}/100`), '100/100']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
