// scripts/test.sh's bookkeeping. Each step leaves one result file in a directory:
//   label <what ran, e.g. "node 24" or "kernel on node 22">
//   seconds <how long it took> (added by scripts/test.sh)
//   passed <count>
//   failed <name>        (one line per failure)
// Subcommands turn each runner's own output into that form, and `summary` prints
// one line per step and the total "N passed, M failed".
//   node scripts/results.mjs check   OUT LABEL EXIT_CODE
//   node scripts/results.mjs vitest  OUT LABEL EXIT_CODE vitest.json
//   node scripts/results.mjs list    OUT LABEL EXIT_CODE results.json   ({ passed, failed: [names] })
//   node scripts/results.mjs kernel  OUT LABEL EXIT_CODE kernel.log
//   node scripts/results.mjs fuzz    OUT LABEL EXIT_CODE fuzz.log   ("fuzz: N passed, M failed", "FAIL <target>: …")
//   node scripts/results.mjs summary DIR SECONDS
import { appendFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const [command, ...args] = process.argv.slice(2);

function write(out, label, passed, failed) {
  appendFileSync(out, `label ${label}\npassed ${passed}\n${failed.map((f) => `failed ${f.replaceAll('\n', ' ')}\n`).join('')}`);
}

/** A runner that exited non-zero must show at least one failure. */
function withExit(failed, code, what) {
  return code !== 0 && failed.length === 0 ? [`${what} exited ${code} with no failed test recorded`] : failed;
}

function vitest(path) {
  if (!existsSync(path)) return { passed: 0, failed: ['vitest wrote no results (it crashed?)'] };
  const j = JSON.parse(readFileSync(path, 'utf8'));
  const failed = [];
  for (const file of j.testResults ?? []) {
    const name = relative(root, file.name);
    const tests = file.assertionResults ?? [];
    for (const t of tests) if (t.status === 'failed') failed.push([name, ...t.ancestorTitles, t.title].join(' > '));
    if (file.status === 'failed' && !tests.some((t) => t.status === 'failed')) {
      failed.push(`${name} (did not run: ${String(file.message ?? '').split('\n')[0]})`);
    }
  }
  return { passed: j.numPassedTests ?? 0, failed };
}

function kernel(path) {
  const log = existsSync(path) ? readFileSync(path, 'utf8') : '';
  let passed = 0;
  let count = 0;
  // run.sh ends with the total ("kernel: N passed, M failed"); without it (cut short),
  // the per-kernel lines ("kernel 6.1: …") add up.
  const total = [...log.matchAll(/^kernel: (\d+) passed, (\d+) failed/gm)].at(-1);
  const lines = total ? [total] : [...log.matchAll(/^kernel [^:\n]+: (\d+) passed, (\d+) failed/gm)];
  for (const m of lines) {
    passed += Number(m[1]);
    count += Number(m[2]);
  }
  const names = [...log.matchAll(/^FAIL (.*?)(?: \(\d+ ms\))?$/gm)].map((m) => m[1]);
  const failed = Array.from({ length: Math.max(count, names.length) }, (_, i) => names[i] ?? 'a kernel test (unnamed)');
  if (passed + failed.length === 0) failed.push('the kernel tests reported nothing');
  return { passed, failed };
}

function fuzz(path) {
  const log = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const total = [...log.matchAll(/^fuzz: (\d+) passed, (\d+) failed/gm)].at(-1);
  const names = [...log.matchAll(/^FAIL (\S+):/gm)].map((m) => `fuzz target ${m[1]}`);
  const count = total ? Number(total[2]) : 0;
  const failed = Array.from({ length: Math.max(count, names.length) }, (_, i) => names[i] ?? 'a fuzz target (unnamed)');
  if (!total && failed.length === 0) failed.push('the fuzz run reported nothing');
  return { passed: total ? Number(total[1]) : 0, failed };
}

function summary(dir, seconds) {
  let passed = 0;
  let failed = 0;
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.result'))
    .sort()) {
    const lines = readFileSync(join(dir, file), 'utf8').split('\n');
    const label = lines.find((l) => l.startsWith('label '))?.slice(6) ?? file;
    const p = Number(lines.find((l) => l.startsWith('passed '))?.slice(7) ?? 0);
    const f = lines.filter((l) => l.startsWith('failed ')).map((l) => l.slice(7));
    const took = lines.find((l) => l.startsWith('seconds '))?.slice(8);
    passed += p;
    failed += f.length;
    console.log(`${label}${took ? ` (${took} s)` : ''}: ${p} passed, ${f.length} failed${f.length ? `: ${f.join('; ')}` : ''}`);
  }
  console.log(`(${Math.floor(seconds / 60)} min ${seconds % 60} s)`);
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0;
}

if (command === 'summary') {
  process.exitCode = summary(args[0], Number(args[1])) ? 0 : 1;
} else {
  const [out, label, code, input] = args;
  const exit = Number(code);
  let r;
  if (command === 'check') r = exit === 0 ? { passed: 1, failed: [] } : { passed: 0, failed: [label] };
  else if (command === 'vitest') r = vitest(input);
  else if (command === 'list') r = existsSync(input) ? JSON.parse(readFileSync(input, 'utf8')) : { passed: 0, failed: [] };
  else if (command === 'kernel') r = kernel(input);
  else if (command === 'fuzz') r = fuzz(input);
  else throw new Error(`results.mjs: unknown command ${command}`);
  write(out, label, r.passed, withExit(r.failed, exit, label));
}
