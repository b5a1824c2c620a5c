// Which bytes of a READ its reply's content chunks have described: sorted,
// merged [start, end) intervals, so an overlap or a gap is found exactly, however
// the chunks are ordered. One chunk (the usual reply) is one interval; chunks that
// arrive in order merge into one as they come. Adding costs up to the number of
// separate intervals (an array splice), so the reply assembler caps that number.

/** The byte ranges of one READ that its reply has described, as sorted, merged intervals. */
export class ReadCoverage {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  /** Bytes described so far. */
  covered = 0;

  /** Separate (not touching) intervals described so far. */
  get ranges(): number {
    return this.starts.length;
  }

  /**
   * Records [start, end) (start < end). Returns false, recording nothing, if it
   * overlaps bytes described earlier; with `union` an overlap is merged instead.
   */
  add(start: number, end: number, union = false): boolean {
    const s = this.starts;
    const e = this.ends;
    // First interval that ends after `start`: the only one that can overlap from the left.
    const i = this.firstEndingAfter(start);
    if (i < s.length && s[i]! < end) {
      if (!union) return false;
      // Swallow every interval that overlaps [start, end) into it.
      let j = i;
      while (j < s.length && s[j]! < end) {
        start = Math.min(start, s[j]!);
        end = Math.max(end, e[j]!);
        this.covered -= e[j]! - s[j]!;
        j++;
      }
      s.splice(i, j - i);
      e.splice(i, j - i);
    }
    this.covered += end - start;
    // Merge with touching neighbours so in-order chunks stay one interval.
    const joinsLeft = i > 0 && e[i - 1] === start;
    const joinsRight = i < s.length && s[i] === end;
    if (joinsLeft && joinsRight) {
      e[i - 1] = e[i]!;
      s.splice(i, 1);
      e.splice(i, 1);
    } else if (joinsLeft) e[i - 1] = end;
    else if (joinsRight) s[i] = start;
    else {
      s.splice(i, 0, start);
      e.splice(i, 0, end);
    }
    return true;
  }

  /** The first byte in [0, length) not described yet, or undefined when all are. */
  firstGap(length: number): number | undefined {
    if (this.covered >= length) return undefined;
    if (this.starts.length === 0 || this.starts[0]! > 0) return 0;
    return this.ends[0]!;
  }

  private firstEndingAfter(x: number): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}
