// Progress of a copy: a bar on a terminal, redrawn at most ten times a second
// (node:readline moves the cursor); ten plain lines when stderr is a file or pipe;
// or nbdcopy's machine-readable `N/100` lines on a file descriptor (--progress=FD).
import { fstatSync, writeSync } from 'node:fs';
import { clearLine, cursorTo } from 'node:readline';
import { UsageError } from './errors.js';
import { roundedSize } from './size.js';

/** Told about a copy's progress; `finish` once it is complete. */
export interface Progress {
  update(done: number, total: number): void;
  finish(done: number, total: number): void;
}

/** Redraws of the terminal bar are at least this far apart. */
export const REDRAW_MS = 100;

const SPINNER = ['▝', '▐', '▗', '▃', '▖', '▍', '▘', '▀'];
const BAR = 40;

/** One line of the terminal bar: spinner, percentage, bar (10 to 40 wide, to fit `width`), bytes, rate, time left. */
export function barLine(done: number, total: number | undefined, seconds: number, frame: number, width = 80): string {
  const rate = seconds > 0 ? done / seconds : 0;
  const rateText = `${roundedSize(rate)}/s`;
  if (total === undefined) return `${SPINNER[frame % SPINNER.length]} ${roundedSize(done)} ${rateText}`.slice(0, width - 1);
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const left = rate > 0 && frac < 1 ? ` ETA ${clock((total - done) / rate)}` : '';
  const spin = frac >= 1 ? '█' : SPINNER[frame % SPINNER.length];
  const head = `${spin} ${String(Math.floor(100 * frac)).padStart(3)}% [`;
  const tail = `] ${roundedSize(done)}/${roundedSize(total)} ${rateText}${left}`;
  const bar = Math.max(10, Math.min(BAR, width - 1 - head.length - tail.length));
  const stars = Math.round(bar * frac);
  return `${head}${'*'.repeat(stars)}${'-'.repeat(bar - stars)}${tail}`.slice(0, Math.max(20, width - 1));
}

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

type Tty = NodeJS.WritableStream & { columns?: number };

/** The terminal bar: one line, rewritten in place, at most every REDRAW_MS; the final state on finish. */
export class TerminalBar implements Progress {
  private last = -Infinity;
  private frame = 0;
  private readonly start = performance.now();

  constructor(
    private readonly out: Tty,
    private readonly totalKnown: boolean,
    private readonly now: () => number = () => performance.now(),
  ) {}

  update(done: number, total: number): void {
    const t = this.now();
    if (t - this.last < REDRAW_MS) return;
    this.last = t;
    this.draw(done, total, false);
  }

  finish(done: number, total: number): void {
    this.draw(done, total, true);
  }

  private draw(done: number, total: number, final: boolean): void {
    // A pseudo-terminal may report 0 columns (script(1) without a size): assume 80.
    const columns = this.out.columns !== undefined && this.out.columns > 0 ? this.out.columns : 80;
    const line = barLine(done, this.totalKnown ? total : undefined, (this.now() - this.start) / 1000, this.frame++, columns);
    cursorTo(this.out, 0);
    this.out.write(line);
    clearLine(this.out, 1);
    if (final) this.out.write('\n');
  }
}

/** Not a terminal: a plain line at every 10 % (at most 11 lines). */
export class LineProgress implements Progress {
  private lastTenth = -1;

  constructor(private readonly out: NodeJS.WritableStream) {}

  update(done: number, total: number): void {
    const tenth = total > 0 ? Math.floor((10 * done) / total) : 10;
    if (tenth <= this.lastTenth) return;
    this.lastTenth = tenth;
    this.out.write(`${tenth * 10}% (${roundedSize(done)} of ${roundedSize(total)})\n`);
  }

  finish(done: number, total: number): void {
    this.update(done, total);
  }
}

/** nbdcopy's `--progress=FD`: `N/100` lines on descriptor `fd`, one whenever N changes, `100/100` at the end. */
export class FdProgress implements Progress {
  private lastPercent = -1;

  constructor(private readonly fd: number) {}

  update(done: number, total: number): void {
    const pct = total > 0 ? Math.min(100, Math.floor((100 * done) / total)) : 0;
    if (pct === this.lastPercent || (pct === 100 && done < total)) return;
    this.lastPercent = pct;
    writeSync(this.fd, `${pct}/100\n`);
  }

  finish(): void {
    if (this.lastPercent !== 100) writeSync(this.fd, '100/100\n');
    this.lastPercent = 100;
  }
}

/**
 * The progress `--progress` asks for: `bar` (the bare flag) is a terminal bar on a
 * TTY and plain lines otherwise; a number is a descriptor for nbdcopy's format.
 */
export function progressOf(
  command: string,
  spec: string | undefined,
  stderr: Tty & { isTTY?: boolean },
  totalKnown: boolean,
): Progress | undefined {
  if (spec === undefined) return undefined;
  if (spec === 'bar') return stderr.isTTY ? new TerminalBar(stderr, totalKnown) : new LineProgress(stderr);
  if (!/^\d+$/.test(spec)) throw new UsageError(command, `--progress=FD: '${spec}' is not a file descriptor number`);
  const fd = Number(spec);
  try {
    fstatSync(fd);
  } catch {
    throw new UsageError(command, `--progress=${fd}: file descriptor ${fd} is not open`);
  }
  return new FdProgress(fd);
}
