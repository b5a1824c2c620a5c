// nbdkit's data format (nbdkit-data-plugin(1), "DATA FORMAT"): bytes, words,
// strings, offsets and groups that describe a small disk image, evaluated to a
// sparse list of writes and a length. Supported: BYTE (decimal, 0octal, 0xhex),
// le16/be16/le32/be32/le64/be64:WORD, "STRING" with C escapes, @OFFSET, @+N,
// @-N, @^ALIGNMENT, ( ... ), EXPR*N, EXPR[N:M] and # comments. Not supported
// (refused by name): <FILE, <(SCRIPT), $VAR and \NAME assignments.
import { NbdInvalidArgumentError } from '@nbd/protocol';

/** Bytes placed at an offset of an image. */
export interface Segment {
  at: number;
  bytes: Uint8Array;
}

/** What an expression evaluates to: writes in order (later ones win) and a length. */
export interface DataImage {
  segments: Segment[];
  /** The highest offset the expression's cursor reached (nbdkit's size of the data). */
  length: number;
}

const bad = (why: string, at: number): never => {
  throw new NbdInvalidArgumentError(`data format: ${why} at character ${at}`);
};

/** A number as nbdkit reads one: decimal, 0-prefixed octal or 0x-prefixed hex. */
function parseNumber(text: string, at: number): bigint {
  if (/^0x[0-9a-f]+$/i.test(text)) return BigInt(text);
  if (/^0[0-7]+$/.test(text)) return BigInt(`0o${text.slice(1)}`);
  if (/^\d+$/.test(text)) return BigInt(text);
  return bad(`"${text}" is not a number`, at);
}

const safe = (n: bigint, at: number): number => (n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : bad('number too large', at));

const ESCAPES: Record<string, number> = { n: 10, t: 9, r: 13, a: 7, b: 8, f: 12, v: 11, '\\': 92, '"': 34, "'": 39, '?': 63 };

class Parser {
  pos = 0;
  constructor(private readonly text: string) {}

  /** Skips blanks and comments; the next character, or '' at the end. */
  peek(): string {
    for (;;) {
      const c = this.text[this.pos];
      if (c === undefined) return '';
      if (c === '#') {
        while (this.pos < this.text.length && this.text[this.pos] !== '\n') this.pos++;
      } else if (/\s/.test(c)) this.pos++;
      else return c;
    }
  }

  /** A run of characters that are not blanks or punctuation. */
  word(): string {
    const start = this.pos;
    while (this.pos < this.text.length && /[^\s()[\]*:#@"]/.test(this.text[this.pos]!)) this.pos++;
    return this.text.slice(start, this.pos);
  }

  /** Expressions until `end` (')' or the end of the text). */
  list(end: string): DataImage {
    const segments: Segment[] = [];
    let cursor = 0;
    let length = 0;
    for (let c = this.peek(); c !== end; c = this.peek()) {
      if (c === '') bad(`missing "${end}"`, this.pos);
      if (c === '@') cursor = this.move(cursor);
      else {
        const img = this.postfix(this.primary());
        for (const s of img.segments) segments.push({ at: s.at + cursor, bytes: s.bytes });
        cursor += img.length;
      }
      length = Math.max(length, cursor);
    }
    return { segments, length };
  }

  /** @OFFSET, @+N, @-N, @^ALIGNMENT: the new cursor. */
  private move(cursor: number): number {
    const at = this.pos++;
    const kind = this.text[this.pos];
    if (kind === '+' || kind === '-' || kind === '^') this.pos++;
    const n = safe(parseNumber(this.word(), at), at);
    if (kind === '+') return cursor + n;
    if (kind === '-') return cursor - n >= 0 ? cursor - n : bad('@- moves before the start', at);
    if (kind === '^') return n > 0 && (n & (n - 1)) === 0 ? Math.ceil(cursor / n) * n : bad(`@^${n} is not a power of two`, at);
    return n;
  }

  private primary(): DataImage {
    const at = this.pos;
    const c = this.peek();
    if (c === '(') {
      this.pos++;
      const img = this.list(')');
      this.pos++;
      return img;
    }
    if (c === '"') return bytesImage(this.string());
    if (c === '<' || c === '$' || c === '\\' || c === '-') return bad(`"${c}" (files, scripts, variables and names) is not supported`, at);
    const w = this.word();
    const m = /^(le|be)(16|32|64)$/.exec(w);
    if (m && this.text[this.pos] === ':') {
      this.pos++;
      return bytesImage(encodeWord(parseNumber(this.word(), at), m[1] === 'le', Number(m[2]) / 8, at));
    }
    if (w === '') bad(`unexpected "${c}"`, at);
    const b = parseNumber(w, at);
    return b <= 255n ? bytesImage(Uint8Array.of(Number(b))) : bad(`byte ${w} is larger than 255`, at);
  }

  /** EXPR*N and EXPR[N:M], any number of them. */
  private postfix(img: DataImage): DataImage {
    for (;;) {
      const c = this.peek();
      const at = this.pos;
      if (c === '*') {
        this.pos++;
        this.peek();
        img = repeat(img, safe(parseNumber(this.word(), at), at));
      } else if (c === '[') {
        this.pos++;
        this.peek();
        const from = this.word();
        if (this.peek() !== ':') bad('expected ":" in a slice', this.pos);
        this.pos++;
        this.peek();
        const to = this.word();
        if (this.peek() !== ']') bad('expected "]"', this.pos);
        this.pos++;
        const a = from === '' ? 0 : safe(parseNumber(from, at), at);
        const b = to === '' ? img.length : safe(parseNumber(to, at), at);
        if (a > b || b > img.length) bad(`slice [${a}:${b}] of ${img.length} bytes`, at);
        img = slice(img, a, b);
      } else return img;
    }
  }

  /** "STRING" with C escapes, as UTF-8 bytes. */
  private string(): Uint8Array {
    const at = this.pos++;
    const out: number[] = [];
    const enc = new TextEncoder();
    for (;;) {
      const c = this.text[this.pos++];
      if (c === undefined) return bad('unterminated string', at);
      if (c === '"') return Uint8Array.from(out);
      if (c !== '\\') {
        out.push(...enc.encode(c));
        continue;
      }
      const e = this.text[this.pos++] ?? '';
      const hex = e === 'x' ? /^[0-9a-fA-F]{1,2}/.exec(this.text.slice(this.pos)) : null;
      const oct = /^[0-7]{1,3}/.exec(this.text.slice(this.pos - 1));
      if (hex) {
        out.push(parseInt(hex[0], 16));
        this.pos += hex[0].length;
      } else if (oct) {
        out.push(parseInt(oct[0], 8) & 0xff);
        this.pos += oct[0].length - 1;
      } else if (ESCAPES[e] !== undefined) out.push(ESCAPES[e]);
      else bad(`unknown escape "\\${e}"`, this.pos - 2);
    }
  }
}

function bytesImage(bytes: Uint8Array): DataImage {
  return { segments: [{ at: 0, bytes }], length: bytes.length };
}

function encodeWord(v: bigint, little: boolean, size: number, at: number): Uint8Array {
  if (v >= 1n << BigInt(size * 8)) bad(`${v} does not fit in ${size * 8} bits`, at);
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[little ? i : size - 1 - i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** Dense repetitions are built in chunks of about this size, shared by the segments that repeat them. */
const CHUNK = 1024 * 1024;

/** `img` `n` times end to end. A dense image becomes chunks of whole repetitions (one buffer reused), so `0x55*1G` holds 1 MiB. */
function repeat(img: DataImage, n: number): DataImage {
  const only = img.segments.length === 1 ? img.segments[0]! : undefined;
  const length = img.length * n;
  if (only !== undefined && only.at === 0 && only.bytes.length === img.length && img.length > 0) {
    const per = Math.min(n, Math.max(1, Math.floor(CHUNK / img.length)));
    const chunk = new Uint8Array(img.length * per);
    chunk.set(only.bytes);
    // Doubling copies: log2(per) calls.
    for (let filled = img.length; filled < chunk.length; filled *= 2) chunk.copyWithin(filled, 0, Math.min(filled, chunk.length - filled));
    const segments: Segment[] = [];
    for (let at = 0; at < length; at += chunk.length) segments.push({ at, bytes: chunk.subarray(0, Math.min(chunk.length, length - at)) });
    return { segments, length };
  }
  const segments: Segment[] = [];
  for (let k = 0; k < n; k++) for (const s of img.segments) segments.push({ at: s.at + k * img.length, bytes: s.bytes });
  return { segments, length };
}

/** Bytes `[a, b)` of `img`, moved to start at 0. */
function slice(img: DataImage, a: number, b: number): DataImage {
  const segments: Segment[] = [];
  for (const s of img.segments) {
    const from = Math.max(s.at, a);
    const to = Math.min(s.at + s.bytes.length, b);
    if (from < to) segments.push({ at: from - a, bytes: s.bytes.subarray(from - s.at, to - s.at) });
  }
  return { segments, length: b - a };
}

/** Evaluates a data-format string. */
export function parseData(text: string): DataImage {
  return new Parser(text).list('');
}
