// Every ```ts block of README.md and packages/*/README.md, type-checked together
// against the built packages (dist/, as an npm user gets them) and, unless fenced
// ```ts no-run, run as a program: each in a fresh temporary directory (its cwd),
// with the peers on PATH and a time limit, so a snippet that never ends fails too.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { extractSnippets, type Snippet } from './extract.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const RUN_TIMEOUT = 30_000;
const PATH = `${dirname(process.execPath)}:/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH ?? ''}`;

const packageDirs = readdirSync(join(root, 'packages')).filter((d) => existsSync(join(root, 'packages', d, 'package.json')));
const markdownFiles = ['README.md', ...packageDirs.map((d) => `packages/${d}/README.md`)].filter((f) => existsSync(join(root, f)));
const snippets = markdownFiles.flatMap((f) => extractSnippets(f, readFileSync(join(root, f), 'utf8')));
const slug = (s: Snippet) => `${s.file.replace(/[^A-Za-z0-9]+/g, '-')}-${s.line}`;

let work = '';
const diagnostics = new Map<string, string[]>();

/** A project in a temp dir: node_modules/@nbd/* link to packages/*, one .ts file per snippet, compiled once. */
function compileAll(): void {
  work = mkdtempSync(join(tmpdir(), 'nbd-snippets-'));
  mkdirSync(join(work, 'node_modules', '@nbd'), { recursive: true });
  mkdirSync(join(work, 'node_modules', '@types'));
  mkdirSync(join(work, 'src'));
  for (const d of packageDirs) {
    const name = JSON.parse(readFileSync(join(root, 'packages', d, 'package.json'), 'utf8')).name as string;
    symlinkSync(join(root, 'packages', d), join(work, 'node_modules', name));
  }
  symlinkSync(join(root, 'node_modules', '@types', 'node'), join(work, 'node_modules', '@types', 'node'));
  writeFileSync(join(work, 'package.json'), JSON.stringify({ type: 'module', private: true }));
  // `export {}` makes each snippet a module of its own (top-level await, no shared globals).
  for (const s of snippets) writeFileSync(join(work, 'src', `${slug(s)}.ts`), `${s.code}\nexport {};\n`);
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2023,
    lib: ['lib.es2024.d.ts'],
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    noUncheckedIndexedAccess: true,
    types: ['node'],
    skipLibCheck: true,
    rootDir: join(work, 'src'),
    outDir: join(work, 'js'),
  };
  const program = ts.createProgram(
    snippets.map((s) => join(work, 'src', `${slug(s)}.ts`)),
    options,
    ts.createCompilerHost(options),
  );
  const host: ts.FormatDiagnosticsHost = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => work, getNewLine: () => '\n' };
  for (const d of [...ts.getPreEmitDiagnostics(program), ...program.emit().diagnostics]) {
    const key = d.file?.fileName ?? '';
    diagnostics.set(key, [...(diagnostics.get(key) ?? []), ts.formatDiagnostic(d, host).trim()]);
  }
}

/** Runs a compiled snippet in a fresh directory; rejects with its output on failure or timeout. */
function runSnippet(s: Snippet): Promise<void> {
  const cwd = mkdtempSync(join(work, 'run-'));
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [join(work, 'js', `${slug(s)}.js`)],
      { cwd, timeout: RUN_TIMEOUT, killSignal: 'SIGKILL', env: { ...process.env, PATH }, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (!err) return resolve();
        const why = err.killed
          ? `did not end within ${RUN_TIMEOUT / 1000} s (a snippet must stop what it starts)`
          : err.message.split('\n')[0];
        reject(new Error(`${s.file}:${s.line}: ${why}\n--- stdout\n${stdout}--- stderr\n${stderr}`));
      },
    );
  });
}

describe('README snippets', () => {
  beforeAll(() => {
    expect(
      packageDirs.every((d) => existsSync(join(root, 'packages', d, 'dist', 'index.d.ts'))),
      'packages must be built (tsc -b)',
    ).toBe(true);
    compileAll();
  }, 120_000);
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('README.md has runnable snippets, and none is lost to the extractor', () => {
    expect(snippets.filter((s) => s.file === 'README.md' && s.run).length).toBeGreaterThan(0);
    expect(diagnostics.get('') ?? [], 'compiler errors outside any snippet').toEqual([]);
    for (const f of markdownFiles) {
      const fences = readFileSync(join(root, f), 'utf8').match(/^\s*```(ts|typescript)\b/gm)?.length ?? 0;
      expect(
        snippets.filter((s) => s.file === f),
        f,
      ).toHaveLength(fences);
    }
  });

  for (const s of snippets) {
    test(
      `${s.file}:${s.line} (${s.heading}) ${s.run ? 'type-checks and runs' : 'type-checks (no-run)'}`,
      async () => {
        const errors = diagnostics.get(join(work, 'src', `${slug(s)}.ts`)) ?? [];
        expect(errors.join('\n'), `type errors in ${s.file}:${s.line}`).toBe('');
        if (s.run) await runSnippet(s);
      },
      RUN_TIMEOUT + 10_000,
    );
  }
});

describe('extractSnippets', () => {
  test('ts and ts no-run blocks, headings, other fences skipped', () => {
    const md = ['# A', '```sh', '# not a heading', '```', '## B', '```ts', 'const a = 1;', '```', '```ts no-run', 'b();', '```'].join('\n');
    expect(extractSnippets('x.md', md)).toEqual([
      { file: 'x.md', line: 6, heading: 'B', code: 'const a = 1;\n', run: true },
      { file: 'x.md', line: 9, heading: 'B', code: 'b();\n', run: false },
    ]);
  });
});
