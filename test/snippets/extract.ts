// The ```ts blocks of a Markdown file, each with where it is and whether it runs.
// Convention (README.md, "Tests"): a ```ts block is a self-contained program that the
// snippet test type-checks and runs; a ```ts no-run block is only type-checked.

export interface Snippet {
  /** The Markdown file, relative to the repository root. */
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** The nearest heading above the block. */
  heading: string;
  code: string;
  run: boolean;
}

const fence = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)\s*(.*)$/;

export function extractSnippets(file: string, markdown: string): Snippet[] {
  const lines = markdown.split('\n');
  const out: Snippet[] = [];
  let heading = '';
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!;
    const h = /^#{1,6}\s+(.*)$/.exec(text);
    if (h) heading = h[1]!.trim();
    const open = fence.exec(text);
    if (!open) continue;
    const [, indent, marker, lang, info] = open as unknown as [string, string, string, string, string];
    // Every fenced block is skipped whole (a heading-like line inside is not a heading).
    let end = i + 1;
    while (end < lines.length && !lines[end]!.trimStart().startsWith(marker)) end++;
    if (lang === 'ts' || lang === 'typescript') {
      const words = info.split(/\s+/).filter(Boolean);
      const body = lines.slice(i + 1, end).map((l) => (l.startsWith(indent) ? l.slice(indent.length) : l));
      out.push({ file, line: i + 1, heading, code: `${body.join('\n')}\n`, run: !words.includes('no-run') });
    }
    i = end;
  }
  return out;
}
