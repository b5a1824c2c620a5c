// `nbd info --map`: block status runs merged where neighbours share a type, described
// per meta context as nbdinfo describes them, as text, JSON, or totals per type.

/** One merged run of the map. */
export interface MapRun {
  offset: number;
  length: number;
  type: number;
}

/** The runs of contiguous extents from offset 0 (merged already, as an ExtentList builds them), with their offsets. */
export function mapRuns(extents: readonly { length: number; flags: number }[]): MapRun[] {
  let offset = 0;
  return extents.map((e) => {
    const run = { offset, length: e.length, type: e.flags };
    offset += e.length;
    return run;
  });
}

/** What a type means in `context`, as nbdinfo says it (undefined: no description). */
export function describeType(context: string, type: number): string | undefined {
  if (context === 'base:allocation') return ['data', 'hole', 'zero', 'hole,zero'][type];
  if (context.startsWith('qemu:dirty-bitmap:')) return ['clean', 'dirty'][type];
  if (context === 'qemu:allocation-depth') return type === 0 ? 'absent' : type === 1 ? 'local' : `backing depth ${type}`;
  return undefined;
}

type Style = 'bold' | 'green' | 'red' | 'whiteBright' | 'bgBlack' | 'bgGray';
type Paint = (style: Style | Style[], text: string) => string;

/** nbdinfo's colour for a type (data bold, dirty red, …); undefined: none. */
function styleOf(context: string, type: number): Style | Style[] | undefined {
  if (context === 'base:allocation') return type === 0 ? 'bold' : undefined;
  if (context.startsWith('qemu:dirty-bitmap:')) return type === 0 ? 'green' : type === 1 ? 'red' : undefined;
  if (context === 'qemu:allocation-depth') return type === 1 ? ['whiteBright', 'bgBlack'] : type > 1 ? 'bgGray' : undefined;
  return undefined;
}

const pad = (v: number | string, width: number) => String(v).padStart(width);

/** `nbd info --map` as text: `offset  length  type  description` per run. */
export function mapText(context: string, runs: readonly MapRun[], paint: Paint): string {
  let out = '';
  for (const r of runs) {
    const d = describeType(context, r.type);
    const line = `${pad(r.offset, 10)}  ${pad(r.length, 10)}  ${pad(r.type, 3)}${d !== undefined ? `  ${d}` : ''}`;
    const style = styleOf(context, r.type);
    out += `${style ? paint(style, line) : line}\n`;
  }
  return out;
}

/** `nbd info --map --json`: nbdinfo's array of `{ offset, length, type, description }`. */
export function mapJson(context: string, runs: readonly MapRun[]): string {
  const rows = runs.map((r) => {
    const d = describeType(context, r.type);
    return `{ "offset": ${r.offset}, "length": ${r.length}, "type": ${r.type}${d !== undefined ? `, "description": ${JSON.stringify(d)}` : ''}}`;
  });
  return `[\n${rows.join(',\n')}\n]\n`;
}

/** Bytes per type, types ascending (what `--totals` reports). */
export function totalsOf(runs: readonly MapRun[]): { type: number; size: number }[] {
  const by = new Map<number, number>();
  for (const r of runs) by.set(r.type, (by.get(r.type) ?? 0) + r.length);
  return [...by.entries()]
    .filter(([, size]) => size > 0)
    .sort((a, b) => a[0] - b[0])
    .map(([type, size]) => ({ type, size }));
}

/** `nbd info --map --totals`: size, percentage of the export, type, description. */
export function totalsText(context: string, runs: readonly MapRun[], exportSize: number, paint: Paint): string {
  if (exportSize === 0) return '';
  let out = '';
  for (const t of totalsOf(runs)) {
    const d = describeType(context, t.type);
    const line = `${pad(t.size, 10)} ${pad(((100 * t.size) / exportSize).toFixed(1), 5)}% ${pad(t.type, 3)}${d !== undefined ? ` ${d}` : ''}`;
    const style = styleOf(context, t.type);
    out += `${style ? paint(style, line) : line}\n`;
  }
  return out;
}

/** `nbd info --map --totals --json`. */
export function totalsJson(context: string, runs: readonly MapRun[], exportSize: number): string {
  if (exportSize === 0) return '[]\n';
  const rows = totalsOf(runs).map((t) => {
    const d = describeType(context, t.type);
    return `{ "size": ${t.size}, "percent": ${formatG((100 * t.size) / exportSize)}, "type": ${t.type}${d !== undefined ? `, "description": ${JSON.stringify(d)}` : ''} }`;
  });
  return `[\n${rows.join(',\n')}\n]\n`;
}

/** C's `%g` (6 significant digits, trailing zeros dropped, exponent form outside 1e-4..1e6). */
export function formatG(x: number): string {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  const exp = Math.floor(Math.log10(Math.abs(Number(x.toPrecision(6)))));
  if (exp < -4 || exp >= 6) {
    const [mant, e] = x.toExponential(5).split('e') as [string, string];
    const m = mant.includes('.') ? mant.replace(/\.?0+$/, '') : mant;
    const n = Number(e);
    return `${m}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
  }
  const fixed = x.toFixed(Math.max(0, 5 - exp));
  return fixed.includes('.') ? fixed.replace(/\.?0+$/, '') : fixed;
}
