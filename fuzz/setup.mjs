// Makes Jazzer.js runnable here: installs fuzz/'s packages (npm ci) when missing, then
// checks that the prebuilt libFuzzer addon loads. Jazzer.js 4.0.0's Linux prebuild is
// linked against glibc 2.38 and GCC 13's libstdc++; on older systems (Debian 12: glibc
// 2.36, GCC 12) it fails to load. Then this builds compat/shim.cc with g++, marks the
// addon's needs for those versions weak (compat/weaken-versions.mjs; the original is
// kept as *.orig) and checks again with the shim preloaded. Idempotent.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { weakenVersions } from './compat/weaken-versions.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, 'node_modules');
const addon = join(modules, '@jazzer.js', 'fuzzer', 'prebuilds', `fuzzer-${process.platform}-${process.arch}.node`);
const compatDir = join(modules, '.nbd-compat');
const preload = join(here, 'compat', 'preload.cjs');

function loads() {
  const r = spawnSync(process.execPath, ['-r', preload, '-e', `require(${JSON.stringify(addon)})`], { encoding: 'utf8' });
  return { ok: r.status === 0, error: r.stderr.split('\n').find((l) => l.startsWith('Error')) ?? r.stderr.trim() };
}

export function setup({ quiet = false } = {}) {
  const say = (m) => quiet || console.error(`fuzz/setup: ${m}`);
  if (!existsSync(join(modules, '@jazzer.js', 'core', 'package.json'))) {
    say('npm ci (Jazzer.js 4.0.0)');
    execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: here, stdio: ['ignore', 'inherit', 'inherit'] });
  }
  let check = loads();
  if (check.ok) return;
  if (!/GLIBC_2\.3[89]|GLIBCXX_3\.4\.3[1-9]/.test(check.error)) throw new Error(`the Jazzer.js addon does not load: ${check.error}`);
  say(`the prebuilt addon needs a newer C/C++ runtime (${check.error.replace(/^Error: /, '')}); building the shim`);
  mkdirSync(compatDir, { recursive: true });
  execFileSync('g++', ['-O2', '-shared', '-fPIC', '-o', join(compatDir, 'shim.node'), join(here, 'compat', 'shim.cc')], {
    stdio: 'inherit',
  });
  if (!existsSync(`${addon}.orig`)) copyFileSync(addon, `${addon}.orig`);
  const weak = weakenVersions(`${addon}.orig`, addon, ['GLIBC_2.38', 'GLIBC_2.39', 'GLIBCXX_3.4.31', 'GLIBCXX_3.4.32', 'GLIBCXX_3.4.33']);
  say(`weakened ${weak.join(', ')}`);
  check = loads();
  if (!check.ok) throw new Error(`the Jazzer.js addon still does not load: ${check.error}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    setup();
    console.error('fuzz/setup: Jazzer.js is ready');
  } catch (e) {
    console.error(`fuzz/setup: ${e.message}`);
    process.exit(1);
  }
}
