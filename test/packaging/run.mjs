// Packaging checks, as an npm user meets the packages: every non-private package
// under packages/ is packed (pnpm pack, which turns workspace:* into versions), its
// tarball is checked (metadata, contents, publint, attw), then all tarballs are
// installed into a fresh ESM and a fresh CommonJS project that are type-checked
// with strict settings and run against real peers (nbdkit, nbdinfo, nbdcopy) on
// every Node line given. Then the `nbd` command as people get it (cli.mjs): the
// bundled tarball installed with npm on every line, the checkout's scripts/nbd.sh,
// and what a Node older than 22 (--old-node) says.
//   node test/packaging/run.mjs --node 'node 22=/path/to/node' … --old-node /usr/bin/node [--results file.json]
// Prints `ok`/`FAIL` per check and ends with "packaging: N passed, M failed".
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { checkMetadata, checkTarball } from './checks.mjs';
import { cliChecks } from './cli.mjs';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = (name) => join(root, 'node_modules', '.bin', name);
const { values } = parseArgs({
  options: {
    node: { type: 'string', multiple: true, default: [] },
    'old-node': { type: 'string', default: '/usr/bin/node' },
    results: { type: 'string' },
  },
});
const lines = values.node.map((spec) => {
  const at = spec.indexOf('=');
  if (at < 0) throw new Error(`--node wants "label=/path/to/node", got ${spec}`);
  return { label: spec.slice(0, at), node: spec.slice(at + 1) };
});
if (lines.length === 0) lines.push({ label: `node ${process.versions.node.split('.')[0]}`, node: process.execPath });

// ---------------------------------------------------------------- harness

const passed = [];
const failed = [];
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed.push(name);
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (err) {
    failed.push(name);
    console.log(`FAIL ${name} (${Date.now() - t0} ms)\n     ${String(err?.message ?? err).replaceAll('\n', '\n     ')}`);
  }
}

/** Runs a command; rejects with its output unless it exits 0. */
function sh(cmd, args, { cwd = root, env = process.env, timeout = 300_000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, env, timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err)
        reject(new Error(`${basename(cmd)} ${args.join(' ')} (in ${cwd}): ${err.message.split('\n')[0]}\n${stdout}${stderr}`.trim()));
      else resolve(stdout);
    });
  });
}

// ---------------------------------------------------------------- packing

const work = mkdtempSync(join(tmpdir(), 'nbd-packaging-'));
const tarballs = join(work, 'tarballs');
mkdirSync(tarballs);
const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const packages = readdirSync(join(root, 'packages'))
  .map((dir) => join(root, 'packages', dir))
  .filter((dir) => existsSync(join(dir, 'package.json')))
  .map((dir) => ({ dir, pkg: JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) }))
  .filter(({ pkg }) => !pkg.private);

for (const p of packages) {
  await check(`${p.pkg.name}: package.json metadata`, () => checkMetadata(p.pkg, rootPkg));
  await check(`${p.pkg.name}: pnpm pack`, async () => {
    const before = new Set(readdirSync(tarballs));
    await sh('pnpm', ['pack', '--pack-destination', tarballs], { cwd: p.dir });
    const made = readdirSync(tarballs).filter((f) => !before.has(f));
    if (made.length !== 1) throw new Error(`expected one new tarball, got ${JSON.stringify(made)}`);
    p.tarball = join(tarballs, made[0]);
  });
  if (!p.tarball) continue;
  await check(`${p.pkg.name}: tarball contents`, async () =>
    checkTarball(p, await sh('tar', ['tzf', p.tarball]), tarballFile(p.tarball), root),
  );
  await check(`${p.pkg.name}: publint --strict`, () => sh(bin('publint'), ['run', p.tarball, '--strict']));
  // attw still models node16 resolution, where require() of an ES module is an error;
  // Node >=22.12 (our engines) loads it, and the CommonJS consumer below proves it.
  // Internal entry points (@nbd/node/internal) serve the sibling packages, which resolve
  // them through the exports map; TypeScript's node10 resolution sees no subpath at all,
  // so they are checked on their own without it.
  const internal = Object.keys(p.pkg.exports ?? {}).filter((k) => k.endsWith('/internal'));
  const attw = ['--ignore-rules', 'cjs-resolves-to-esm', '--format', 'table-flipped', '--no-color'];
  await check(`${p.pkg.name}: attw`, () =>
    sh(bin('attw'), [p.tarball, ...attw, ...(internal.length > 0 ? ['--exclude-entrypoints', ...internal] : [])]),
  );
  if (internal.length > 0) {
    await check(`${p.pkg.name}: attw of ${internal.join(', ')} (node16 and bundler)`, () =>
      sh(bin('attw'), [p.tarball, ...attw, '--entrypoints', ...internal, '--profile', 'node16']),
    );
  }
}

function tarballFile(tarball) {
  return (path) => sh('tar', ['xzf', tarball, '-O', `package/${path}`]);
}

// ---------------------------------------------------------------- consumers

const packed = packages.filter((p) => p.tarball);
const consumerSrc = fileURLToPath(new URL('./consumer/', import.meta.url));
const typesMajor =
  lines
    .map((l) => Number(l.label.replace(/\D+/g, '')))
    .filter((n) => n > 0)
    .sort((a, b) => a - b)[0] ?? 22;
const flavours = [
  { kind: 'esm', type: 'module', main: 'main.mjs' },
  { kind: 'cjs', type: 'commonjs', main: 'main.cjs' },
];

for (const f of flavours) {
  f.dir = join(work, `consumer-${f.kind}`);
  mkdirSync(f.dir);
  for (const file of ['exercise.cjs', f.main, 'types.ts']) cpSync(join(consumerSrc, file), join(f.dir, file));
  const dependencies = Object.fromEntries(packed.map((p) => [p.pkg.name, `file:${p.tarball}`]));
  // @types/node of the oldest line: the packages' types must not need a newer one.
  const devDependencies = { '@types/node': `^${typesMajor}` };
  writeFileSync(
    join(f.dir, 'package.json'),
    JSON.stringify({ name: `consumer-${f.kind}`, private: true, type: f.type, dependencies, devDependencies }, null, 2),
  );
  writeFileSync(join(f.dir, 'tsconfig.json'), JSON.stringify(strictTsconfig(), null, 2));
  await check(`consumer (${f.kind}): npm install of the tarballs`, async () => {
    await sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], { cwd: f.dir });
    const lock = JSON.parse(readFileSync(join(f.dir, 'package-lock.json'), 'utf8'));
    for (const p of packed) {
      const entry = lock.packages[`node_modules/${p.pkg.name}`];
      if (!entry?.resolved?.startsWith('file:')) throw new Error(`${p.pkg.name} did not come from its tarball: ${JSON.stringify(entry)}`);
    }
    const nested = Object.keys(lock.packages).filter((k) => /node_modules\/.*node_modules\/@nbd\//.test(k));
    if (nested.length > 0) throw new Error(`a second copy of a package was installed: ${nested.join(', ')}`);
    f.installed = true;
  });
  if (!f.installed) continue;
  await check(`consumer (${f.kind}): tsc with strict, exactOptionalPropertyTypes, skipLibCheck false`, () =>
    sh(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', f.dir]),
  );
}

function strictTsconfig() {
  return {
    compilerOptions: {
      target: 'ES2023',
      lib: ['ES2024'],
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      exactOptionalPropertyTypes: true,
      noUncheckedIndexedAccess: true,
      noImplicitOverride: true,
      skipLibCheck: false,
      types: ['node'],
      noEmit: true,
    },
    files: ['types.ts'],
  };
}

for (const line of lines) {
  const env = { ...process.env, PATH: `${dirname(line.node)}:/usr/bin:/usr/sbin:/bin:/sbin:${process.env.PATH ?? ''}` };
  for (const f of flavours.filter((x) => x.installed)) {
    await check(`consumer (${f.kind}) on ${line.label}: client against nbdkit, server read by nbdinfo and nbdcopy`, async () => {
      const out = await sh(line.node, [f.main], { cwd: f.dir, env, timeout: 90_000 });
      if (!out.includes(`${f.kind} consumer ok`)) throw new Error(`no "${f.kind} consumer ok" in its output:\n${out}`);
    });
  }
  // The installed `nbd` binary, as a user runs it: a captive server read by nbdinfo.
  const esm = flavours.find((x) => x.kind === 'esm' && x.installed);
  if (esm) {
    await check(`nbd (installed bin) on ${line.label}: serve -U - memory 16M --run 'nbdinfo --size $uri'`, async () => {
      const bin = join(esm.dir, 'node_modules', '.bin', 'nbd');
      const out = await sh(line.node, [bin, 'serve', '-U', '-', 'memory', '16M', '--run', 'nbdinfo --size "$uri"'], {
        cwd: esm.dir,
        env,
        timeout: 60_000,
      });
      if (out.trim() !== String(16 << 20)) throw new Error(`nbdinfo through nbd serve said: ${out}`);
    });
  }
}

// ---------------------------------------------------------------- the nbd command

await cliChecks({ check, root, work, lines, oldNode: values['old-node'] });

// ---------------------------------------------------------------- summary

if (!process.env.KEEP_PACKAGING_DIR) rmSync(work, { recursive: true, force: true });
else console.log(`kept ${work}`);
if (values.results) writeFileSync(values.results, JSON.stringify({ passed: passed.length, failed }, null, 2));
console.log(`packaging: ${passed.length} passed, ${failed.length} failed`);
process.exitCode = failed.length > 0 || passed.length === 0 ? 1 : 0;
