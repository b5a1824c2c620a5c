// The `nbd` command as people get it today, each way tested as they would use it:
// - the bundled tarball (scripts/pack-cli.mjs), `npm install -g` into an empty prefix
//   with an empty HOME (nothing but koffi comes from the registry), then `nbd` on each
//   Node line: --version, serve + info, copy, serve and copy on worker threads;
// - the checkout's `scripts/nbd.sh` (what `npm run nbd -- …` runs);
// - on a Node older than 22 (the machine's own): the bin's one-line refusal, from the
//   checkout and from the tarball, and each package's NbdNodeVersionError on import.
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

const MiB = 1 << 20;

/** Runs a command to its end: { code, stdout, stderr }, whatever the exit code. */
function run(cmd, args, { cwd, env = process.env, timeout = 120_000 } = {}) {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env, timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : String(err.code ?? err.signal)) : 0, stdout, stderr });
    });
  });
}

/** Runs a command; throws with its output unless it exits 0. */
async function ok(cmd, args, opts) {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}\n${r.stdout}${r.stderr}`.trim());
  return r.stdout;
}

function expectEqual(what, got, want) {
  if (got !== want) throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

/** The directory of `npm` on this PATH (kept on the PATH of the installs). */
function npmDir() {
  for (const d of (process.env.PATH ?? '').split(delimiter)) if (d && existsSync(join(d, 'npm'))) return d;
  throw new Error('no npm on the PATH');
}

/** The environment of a fresh user: `node` of this line first, an empty HOME, no npm_* settings inherited from a parent npm. */
function userEnv(nodeBin, home, extraPath = []) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_|^node_(options|path)$/i.test(k)));
  return { ...env, HOME: home, PATH: [...extraPath, dirname(nodeBin), '/usr/bin', '/bin', npmDir()].join(delimiter) };
}

/** nbdkit's pattern, `size` bytes of it from `from`: each 8-byte big-endian word holds its own offset. */
function checkPattern(buf, from, size, what) {
  expectEqual(`${what}: size`, buf.length, size);
  for (let at = 0; at + 8 <= buf.length; at += 8) {
    if (buf.readBigUInt64BE(at) !== BigInt(from + at)) throw new Error(`${what}: the word at ${at} is not ${from + at}`);
  }
}

/** Installs the tarball as a user would, with `npm` running on `nodeBin`; resolves with the prefix. */
async function install(tarball, dir, nodeBin) {
  const [home, prefix, cwd] = ['home', 'prefix', 'cwd'].map((d) => join(dir, d));
  for (const d of [home, prefix, cwd]) mkdirSync(d, { recursive: true });
  const env = userEnv(nodeBin, home);
  await ok('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd, env });
  // Nothing but @nbd/cli of ours: a missing piece of the bundle cannot be found elsewhere.
  const top = readdirSync(join(prefix, 'lib', 'node_modules'));
  expectEqual('packages in the prefix', top.join(','), '@nbd');
  expectEqual('@nbd packages in the prefix', readdirSync(join(prefix, 'lib', 'node_modules', '@nbd')).join(','), 'cli');
  const nested = join(prefix, 'lib', 'node_modules', '@nbd', 'cli', 'node_modules');
  if (existsSync(join(nested, '@nbd'))) throw new Error(`npm installed @nbd packages under @nbd/cli: ${readdirSync(join(nested, '@nbd'))}`);
  return { prefix, cwd, env: userEnv(nodeBin, home, [join(prefix, 'bin')]) };
}

/** The tarball's own checks: no @nbd dependency or import left, and a bin that loads nothing before its version check. */
async function checkTarballContents(tarball, version) {
  const read = (path) => ok('tar', ['xzf', tarball, '-O', `package/${path}`]);
  const pkg = JSON.parse(await read('package.json'));
  expectEqual('version', pkg.version, version);
  expectEqual('bin', JSON.stringify(pkg.bin), JSON.stringify({ nbd: './dist/bin.js' }));
  const ours = Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies, ...pkg.peerDependencies }).filter((d) =>
    d.startsWith('@nbd/'),
  );
  if (ours.length > 0) throw new Error(`the tarball depends on ${ours.join(', ')}`);
  if (JSON.stringify(pkg).includes('workspace:')) throw new Error('workspace: ranges left in package.json');
  const files = (await ok('tar', ['tzf', tarball])).split('\n').filter((f) => /^package\/dist\/.*\.js$/.test(f));
  // Modules found by URL at run time (worker files, a device's module for a worker to
  // import) must be files of dist/ by the name the code asks for: a module's own
  // import.meta.url (which may be a shared chunk) must have become its entry's URL.
  const SIBLING = /new URL\((["'])\.\/([\w.-]+\.js)\1,\s*import\.meta\.url\)/g;
  for (const f of files) {
    const text = await read(f.slice('package/'.length));
    if (/(from|import)\s*\(?\s*["']@nbd\//.test(text)) throw new Error(`${f} still imports an @nbd package`);
    for (const m of text.matchAll(SIBLING))
      if (!files.includes(`package/dist/${m[2]}`)) throw new Error(`${f} asks for dist/${m[2]}, not in the tarball`);
    if (text.replace(SIBLING, '').includes('import.meta.url'))
      throw new Error(`${f} hands out its own import.meta.url (a chunk's, not a module's)`);
  }
  const bin = await read('dist/bin.js');
  const statics = [...bin.matchAll(/^import\s[^;]*?from\s*["']([^"']+)["']|^import\s*["']([^"']+)["']/gm)].map((m) => m[1] ?? m[2]);
  const notNode = statics.filter((s) => !s.startsWith('node:'));
  if (notNode.length > 0) throw new Error(`dist/bin.js imports ${notNode.join(', ')} before its Node.js version check`);
  if (!/process\.versions\.node/.test(bin.slice(0, bin.indexOf('import('))))
    throw new Error('dist/bin.js imports before it checks the Node.js version');
}

/** `nbd` from the installed tarball: version, a served export read back by info and copy, then the same on worker threads. */
async function lineChecks(check, line, tarball, version, work) {
  const on = `nbd tarball on ${line.label}`;
  let user;
  await check(`${on}: npm install -g into an empty prefix and HOME`, async () => {
    user = await install(tarball, join(work, `cli-${line.label.replace(/\W+/g, '-')}`), line.node);
  });
  if (!user) return;
  const nbd = (args) => ok('nbd', args, { cwd: user.cwd, env: user.env, timeout: 60_000 });
  const img = (name) => readFileSync(join(user.cwd, name));
  await check(`${on}: nbd --version`, async () => expectEqual('nbd --version', (await nbd(['--version'])).trim(), `nbd ${version}`));
  await check(`${on}: nbd serve -U - memory 16M --run 'nbd info --size $uri'`, async () =>
    expectEqual('size', (await nbd(['serve', '-U', '-', 'memory', '16M', '--run', 'nbd info --size "$uri"'])).trim(), String(16 * MiB)),
  );
  await check(`${on}: nbd serve -U - pattern 4M --run 'nbd copy $uri pattern.img'`, async () => {
    await nbd(['serve', '-U', '-', 'pattern', '4M', '--run', 'nbd copy "$uri" pattern.img']);
    checkPattern(img('pattern.img'), 0, 4 * MiB, 'pattern.img');
  });
  // Every module a worker imports by URL: serve-worker, copy-worker, and the devices'
  // own modules (shared memory, a filter stack over a file, a source).
  await check(`${on}: nbd serve -t 2 (memory, offset over file, pattern) and nbd copy -T 2 both ways`, async () => {
    const named = (name) => `"nbd+unix:///${name}?socket=$unixsocket"`;
    const script = [
      'nbd copy -T 2 pattern.img "$uri"',
      'nbd copy -T 2 "$uri" mem.img',
      `nbd copy -T 2 ${named('off')} off.img`,
      `nbd copy -T 2 ${named('pat')} pat.img`,
    ].join(' && ');
    const exports = '-e mem memory 4M -e off --filter offset file pattern.img offset=1M -e pat pattern 4M'.split(' ');
    await nbd(['serve', '-t', '2', '-U', '-', ...exports, '--run', script]);
    checkPattern(img('mem.img'), 0, 4 * MiB, 'mem.img (copied into the threaded memory export and back)');
    checkPattern(img('off.img'), MiB, 3 * MiB, 'off.img (offset=1M over pattern.img)');
    checkPattern(img('pat.img'), 0, 4 * MiB, 'pat.img');
  });
  await check(`${on}: nbd attach --help`, async () => {
    const help = await nbd(['attach', '--help']);
    if (!help.startsWith('Usage: nbd attach')) throw new Error(`nbd attach --help said:\n${help}`);
  });
}

const REFUSAL = (v) => `nbd: needs Node.js 22 or newer (this is ${v})\n`;

/** Node < 22: the bin's one line (exit 1, no stack) and each package's NbdNodeVersionError. */
async function oldNodeChecks(check, root, work, oldNode, tarball) {
  const v = (await run(oldNode, ['--version'])).stdout.trim();
  const label = /^v\d+/.test(v) ? `node ${v.replace(/^v(\d+).*/, '$1')}` : 'an old node';
  let usable = false;
  await check(`${label} (${oldNode}) is older than 22, as the checks below need`, async () => {
    if (!/^v\d+\./.test(v) || Number(v.slice(1).split('.')[0]) >= 22) throw new Error(`${oldNode} is ${v || 'missing'} (set NBD_OLD_NODE)`);
    usable = true;
  });
  if (!usable) return;
  const refused = async (cmd, args, opts) => {
    const r = await run(cmd, args, opts);
    expectEqual('exit code', r.code, 1);
    expectEqual('stderr', r.stderr, REFUSAL(v));
    expectEqual('stdout', r.stdout, '');
  };
  const bin = join(root, 'packages', 'cli', 'dist', 'bin.js');
  for (const args of [['--version'], ['info', 'nbd://localhost:1'], ['serve', 'memory', '1M']]) {
    await check(`nbd (checkout) on ${label}: nbd ${args.join(' ')} says it needs Node.js 22, exit 1`, () =>
      refused(oldNode, [bin, ...args]),
    );
  }
  await check(`nbd tarball on ${label}: npm install -g, then nbd --version says it needs Node.js 22, exit 1`, async () => {
    const user = await install(tarball, join(work, 'cli-old-node'), oldNode);
    await refused('nbd', ['--version'], { cwd: user.cwd, env: user.env });
  });
  const probe = `import(process.argv[1]).then(() => console.log('loaded'), (e) => console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })))`;
  const want = JSON.stringify({
    name: 'NbdNodeVersionError',
    code: 'NBD_ERR_NODE_VERSION',
    message: `@nbd needs Node.js 22 or newer (this is ${v})`,
  });
  for (const dir of readdirSync(join(root, 'packages')).sort()) {
    const entry = join(root, 'packages', dir, 'dist', 'index.js');
    await check(`@nbd/${dir} on ${label}: import() throws NbdNodeVersionError`, async () =>
      expectEqual('import()', (await ok(oldNode, ['-e', probe, pathToFileURL(entry).href])).trim(), want),
    );
  }
}

/** The checkout's command: scripts/nbd.sh runs the build on a supported Node, or says how to build. */
async function checkoutChecks(check, root, work, oldNode) {
  await check('scripts/nbd.sh --version (the checkout, a supported node whatever the PATH has)', async () => {
    const env = { ...process.env, PATH: [dirname(oldNode), '/usr/bin', '/bin'].join(delimiter) };
    const r = await run('bash', [join(root, 'scripts', 'nbd.sh'), '--version'], { cwd: work, env });
    expectEqual('stdout', r.stdout.trim(), `nbd ${readVersion(root)}`);
  });
  await check('scripts/nbd.sh in an unbuilt checkout: says to run npm run setup, exit 1', async () => {
    const fake = join(work, 'unbuilt');
    mkdirSync(join(fake, 'packages', 'cli'), { recursive: true });
    cpSync(join(root, 'scripts'), join(fake, 'scripts'), { recursive: true });
    const r = await run('bash', [join(fake, 'scripts', 'nbd.sh'), '--version'], { cwd: work });
    expectEqual('exit code', r.code, 1);
    if (!r.stderr.includes('npm run setup')) throw new Error(`stderr: ${r.stderr}`);
  });
}

function readVersion(root) {
  return JSON.parse(readFileSync(join(root, 'packages', 'cli', 'package.json'), 'utf8')).version;
}

/** Every check of this file, through run.mjs's check(). */
export async function cliChecks({ check, root, work, lines, oldNode }) {
  const version = readVersion(root);
  let tarball;
  await check('nbd tarball: node scripts/pack-cli.mjs (esbuild bundle)', async () => {
    const out = await ok(process.execPath, [join(root, 'scripts', 'pack-cli.mjs'), '--no-build', '--out', join(work, 'cli-pack')], {
      cwd: root,
    });
    tarball = out.trim().split('\n').at(-1);
    expectEqual('tarball name', tarball.split('/').at(-1), `nbd-cli-${version}.tgz`);
  });
  if (!tarball) return;
  await check('nbd tarball: no @nbd dependency or import left, each module found by URL is in dist/, the bin checks Node.js first', () =>
    checkTarballContents(tarball, version),
  );
  for (const line of lines) await lineChecks(check, line, tarball, version, work);
  await checkoutChecks(check, root, work, oldNode);
  await oldNodeChecks(check, root, work, oldNode, tarball);
}
