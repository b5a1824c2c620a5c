// nbdkit's data format (nbdkit-data-plugin(1), "DATA FORMAT"): bytes, words,
// strings, offsets and groups that describe a small disk image, parsed into an
// expression tree that knows its length without being expanded (data-eval.ts
// writes it, clipped to the device's size). As in nbdkit, a group is an image of
// its own: bytes it leaves unwritten are zeroes when it is placed; only the
// top-level list leaves what lies between its items as it was. Supported: BYTE (decimal, 0octal,
// 0xhex), le16/be16/le32/be32/le64/be64:WORD, "STRING" with C escapes, @OFFSET,
// @+N, @-N, @^ALIGNMENT, ( ... ), EXPR*N, EXPR[N:M] and # comments. Not supported
// (refused by name): <FILE, <(SCRIPT), $VAR and \NAME assignments.
import { isPowerOfTwo, NbdInvalidArgumentError } from '@nbd/protocol';

/**
 * A parsed expression. `length`: the bytes it spans (nbdkit's size of the data: the
 * highest offset its cursor reached); every byte it writes lies in [0, length).
 */
export type DataExpr = { length: number } & (
  | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'seq'; items: { at: number; expr: DataExpr }[] }
  | { kind: 'repeat'; expr: DataExpr; count: number }
  | { kind: 'slice'; expr: DataExpr; from: number }
);

/** Groups nested deeper than this are refused (each level is a stack frame when parsing and writing). */
export const MAX_DATA_NESTING = 1000;

const MAX = Number.MAX_SAFE_INTEGER;

/** Refuses the text: where (`at`, said counting from 1 as an editor does) and what is wrong there. */
const bad = (why: string, at: number): never => {
  throw new NbdInvalidArgumentError(`data format: at character ${at + 1}, ${why}`);
};

/** A number as nbdkit reads one: decimal, 0-prefixed octal or 0x-prefixed hex. */
function parseNumber(text: string, at: number): bigint {
  if (/^0x[0-9a-f]+$/i.test(text)) return BigInt(text);
  if (/^0[0-7]+$/.test(text)) return BigInt(`0o${text.slice(1)}`);
  if (/^\d+$/.test(text)) return BigInt(text);
  return bad(text === '' ? 'a number is missing' : `"${text}" is not a number (decimal, 0-prefixed octal or 0x-prefixed hex)`, at);
}

const safe = (n: bigint, at: number): number => (n <= BigInt(MAX) ? Number(n) : bad('the number is too large', at));

/** An offset or length past 2^53 - 1 bytes (what a device size can be) is refused where it arises. */
const within = (n: number, at: number): number => (n <= MAX ? n : bad('the data reaches beyond 2^53 - 1 bytes', at));

const ESCAPES: Record<string, number> = { n: 10, t: 9, r: 13, a: 7, b: 8, f: 12, v: 11, '\\': 92, '"': 34, "'": 39, '?': 63 };

/** A run of string characters that need no escape handling. */
const PLAIN = /[^"\\]*/y;
/** Blanks and # comments. */
const BLANKS = /(?:\s+|#[^\n]*)*/y;
/** A word: up to a blank or punctuation. */
const WORD = /[^\s()[\]*:#@"]*/y;
/** One-byte arrays for BYTE, shared (views into one buffer of 0…255; expressions never write into their bytes). */
const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, b) => b);
const BYTE = Array.from({ length: 256 }, (_, b) => ALL_BYTES.subarray(b, b + 1));

const bytesExpr = (bytes: Uint8Array): DataExpr => ({ kind: 'bytes', length: bytes.length, bytes });

/** Items of a group: runs of bytes written end to end become one `bytes` item. */
class SeqBuilder {
  readonly items: { at: number; expr: DataExpr }[] = [];
  private run: Uint8Array[] = [];
  private runAt = 0;
  private runEnd = 0;

  add(at: number, expr: DataExpr): void {
    if (expr.kind === 'bytes' && this.run.length > 0 && at === this.runEnd) {
      this.run.push(expr.bytes);
      this.runEnd += expr.length;
      return;
    }
    this.flush();
    if (expr.kind === 'bytes') {
      this.run = [expr.bytes];
      this.runAt = at;
      this.runEnd = at + expr.length;
    } else if (expr.length > 0) this.items.push({ at, expr });
  }

  flush(): void {
    if (this.run.length === 0) return;
    const bytes = this.run.length === 1 ? this.run[0]! : new Uint8Array(this.runEnd - this.runAt);
    if (this.run.length > 1) {
      let pos = 0;
      for (const b of this.run) {
        bytes.set(b, pos);
        pos += b.length;
      }
    }
    if (bytes.length > 0) this.items.push({ at: this.runAt, expr: bytesExpr(bytes) });
    this.run = [];
  }
}

class Parser {
  pos = 0;
  private depth = 0;
  constructor(private readonly text: string) {}

  /** Skips blanks and comments; the next character, or '' at the end. */
  peek(): string {
    BLANKS.lastIndex = this.pos;
    this.pos += BLANKS.exec(this.text)![0].length;
    return this.text[this.pos] ?? '';
  }

  /** A run of characters that are not blanks or punctuation. */
  word(): string {
    WORD.lastIndex = this.pos;
    const w = WORD.exec(this.text)![0];
    this.pos += w.length;
    return w;
  }

  /** Expressions until `end` (')' or the end of the text): a group, its offsets relative to its start. */
  list(end: string): DataExpr {
    const seq = new SeqBuilder();
    let cursor = 0;
    let length = 0;
    for (let c = this.peek(); c !== end; c = this.peek()) {
      if (c === '') bad(`a "${end}" is missing`, this.pos);
      const at = this.pos;
      if (c === '@') cursor = this.move(cursor);
      else {
        const expr = this.postfix(this.primary());
        seq.add(cursor, expr);
        cursor = within(cursor + expr.length, at);
      }
      length = Math.max(length, cursor);
    }
    seq.flush();
    const { items } = seq;
    // A group of one item at its start is that item.
    if (items.length === 1 && items[0]!.at === 0 && items[0]!.expr.length === length) return items[0]!.expr;
    return { kind: 'seq', length, items };
  }

  /** @OFFSET, @+N, @-N, @^ALIGNMENT: the new cursor. */
  private move(cursor: number): number {
    const at = this.pos++;
    const kind = this.text[this.pos];
    if (kind === '+' || kind === '-' || kind === '^') this.pos++;
    const n = safe(parseNumber(this.word(), at), at);
    if (kind === '+') return within(cursor + n, at);
    if (kind === '-') return cursor - n >= 0 ? cursor - n : bad('@- moves before the start', at);
    if (kind === '^') return isPowerOfTwo(n) ? within(Math.ceil(cursor / n) * n, at) : bad(`@^${n} is not a power of two`, at);
    return n;
  }

  private primary(): DataExpr {
    const at = this.pos;
    const c = this.peek();
    if (c === '(') {
      if (++this.depth > MAX_DATA_NESTING) bad(`groups nested deeper than ${MAX_DATA_NESTING}`, at);
      this.pos++;
      const expr = this.list(')');
      this.pos++;
      this.depth--;
      return expr;
    }
    if (c === '"') return bytesExpr(this.string());
    if (c === '<' || c === '$' || c === '\\' || c === '-') return bad(`"${c}" (files, scripts, variables and names) is not supported`, at);
    const w = this.word();
    const m = /^(le|be)(16|32|64)$/.exec(w);
    if (m && this.text[this.pos] === ':') {
      this.pos++;
      return bytesExpr(encodeWord(parseNumber(this.word(), at), m[1] === 'le', Number(m[2]) / 8, at));
    }
    if (w === '') bad(`unexpected "${c}"`, at);
    const b = parseNumber(w, at);
    return b <= 255n ? bytesExpr(BYTE[Number(b)]!) : bad(`byte ${w} is larger than 255`, at);
  }

  /** EXPR*N and EXPR[N:M], any number of them. */
  private postfix(expr: DataExpr): DataExpr {
    for (;;) {
      const c = this.peek();
      const at = this.pos;
      if (c === '*') {
        this.pos++;
        this.peek();
        const count = safe(parseNumber(this.word(), at), at);
        if (expr.length > 0 && count > MAX / expr.length) bad('the data reaches beyond 2^53 - 1 bytes', at);
        expr = { kind: 'repeat', length: expr.length * count, expr, count };
      } else if (c === '[') {
        this.pos++;
        this.peek();
        const from = this.word();
        if (this.peek() !== ':') bad('a slice needs a ":"', this.pos);
        this.pos++;
        this.peek();
        const to = this.word();
        if (this.peek() !== ']') bad('a slice needs a closing "]"', this.pos);
        this.pos++;
        const a = from === '' ? 0 : safe(parseNumber(from, at), at);
        const b = to === '' ? expr.length : safe(parseNumber(to, at), at);
        if (a > b || b > expr.length) bad(`the slice [${a}:${b}] does not fit the ${expr.length} bytes before it`, at);
        expr = { kind: 'slice', length: b - a, expr, from: a };
      } else return expr;
    }
  }

  /** "STRING" with C escapes, as UTF-8 bytes. */
  private string(): Uint8Array {
    const at = this.pos++;
    const parts: Uint8Array[] = [];
    const enc = new TextEncoder();
    for (;;) {
      // Plain characters up to the next quote or escape, encoded at once.
      PLAIN.lastIndex = this.pos;
      const plain = PLAIN.exec(this.text)![0];
      if (plain.length > 0) parts.push(enc.encode(plain));
      this.pos += plain.length;
      const c = this.text[this.pos++];
      if (c === undefined) return bad('a string has no closing "', at);
      if (c === '"') return concat(parts);
      const e = this.text[this.pos++] ?? '';
      const hex = e === 'x' ? /^[0-9a-fA-F]{1,2}/.exec(this.text.slice(this.pos, this.pos + 2)) : null;
      const oct = /^[0-7]{1,3}/.exec(this.text.slice(this.pos - 1, this.pos + 2));
      if (hex) {
        parts.push(Uint8Array.of(parseInt(hex[0], 16)));
        this.pos += hex[0].length;
      } else if (oct) {
        parts.push(Uint8Array.of(parseInt(oct[0], 8) & 0xff));
        this.pos += oct[0].length - 1;
      } else if (ESCAPES[e] !== undefined) parts.push(Uint8Array.of(ESCAPES[e]));
      else bad(`unknown escape "\\${e}"`, this.pos - 2);
    }
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

function encodeWord(v: bigint, little: boolean, size: number, at: number): Uint8Array {
  if (v >= 1n << BigInt(size * 8)) bad(`${v} does not fit in ${size * 8} bits`, at);
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[little ? i : size - 1 - i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** Parses a data-format string (work proportional to its text; nothing is expanded). */
export function parseDataFormat(text: string): DataExpr {
  return new Parser(text).list('');
}
