// Builds nbd-cli-<version>.tgz: the `nbd` command with its workspace packages bundled
// in (esbuild), installable alone with `npm install -g ./nbd-cli-<version>.tgz` while
// no @nbd package is published. koffi (native) stays a real dependency that npm
// installs from the registry.
//   node scripts/pack-cli.mjs [--out DIR] [--no-build]   (DIR defaults to dist/pack)
// Prints the tarball's path last.
//
// Worker threads and device recipes find modules by URL at run time: a worker file
// next to its module (`new URL('./serve-worker.js', import.meta.url)`), a device's
// own module for a worker to import (`{ module: import.meta.url }`, whose exported
// openDevice() the worker calls). So every such file is an entry point of the bundle,
// all output sits in one directory, and a module that hands out its own URL has that
// URL rewritten to its entry file's (its code may land in a shared chunk).
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: { out: { type: 'string', default: join(root, 'dist', 'pack') }, 'no-build': { type: 'boolean' } },
});
const out = resolve(values.out);
const cliDir = join(root, 'packages', 'cli');
const cliPkg = readJson(join(cliDir, 'package.json'));

function readJson(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

const { build } = await import('esbuild').catch(() => {
  console.error('pack-cli: esbuild is not installed: run `npm run setup` first (it installs the packages and builds)');
  process.exit(1);
});
if (!values['no-build']) {
  console.error('pack-cli: tsc -b');
  execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-b'], { cwd: root, stdio: 'inherit' });
}

// ---------------------------------------------------------------- the packages and their outside dependencies

const workspace = new Map(); // name -> { dir, pkg }
for (const name of Object.keys(cliPkg.dependencies)) {
  if (!name.startsWith('@nbd/')) continue;
  const dir = join(root, 'packages', name.slice('@nbd/'.length));
  workspace.set(name, { dir, pkg: readJson(join(dir, 'package.json')) });
}
/** Every non-workspace dependency of the bundled packages: left out of the bundle, installed by npm. */
const outside = {};
for (const { pkg } of [{ pkg: cliPkg }, ...workspace.values()]) {
  for (const [dep, range] of Object.entries({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
    if (range.startsWith('workspace:')) continue;
    if (outside[dep] !== undefined && outside[dep] !== range)
      throw new Error(`pack-cli: ${dep} is ${outside[dep]} in one package, ${range} in another`);
    outside[dep] = range;
  }
}

// ---------------------------------------------------------------- entry points, found by reading the bundle's inputs

const URL_TARGET = /new URL\((['"])\.\/([\w.-]+)\.js\1,\s*import\.meta\.url\)/g;
const entries = new Map([['bin', join(cliDir, 'dist', 'bin.js')]]); // entry name -> file
const ownUrl = new Map(); // file -> its entry name, for files whose import.meta.url is handed out

function addEntry(name, file) {
  const had = entries.get(name);
  if (had !== undefined && had !== file) throw new Error(`pack-cli: two entry points named ${name}: ${had} and ${file}`);
  if (had !== undefined) return false;
  entries.set(name, file);
  return true;
}

/** Adds what `file` reaches by URL; true when that added an entry point. */
function scan(file) {
  const text = readFileSync(file, 'utf8');
  let added = false;
  for (const m of text.matchAll(URL_TARGET)) added = addEntry(m[2], join(dirname(file), `${m[2]}.js`)) || added;
  // import.meta.url used otherwise than as the base of such a URL: the module's own URL goes somewhere.
  if (text.replace(URL_TARGET, '').includes('import.meta.url')) {
    const name = basename(file, '.js');
    ownUrl.set(file, name);
    added = addEntry(name, file) || added;
  }
  return added;
}

const ownUrlPlugin = {
  name: 'own-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, (args) => {
      const name = ownUrl.get(args.path);
      if (name === undefined) return undefined;
      const text = readFileSync(args.path, 'utf8').replaceAll('import.meta.url', `new URL('./${name}.js', import.meta.url).href`);
      return { contents: text, loader: 'js', resolveDir: dirname(args.path) };
    });
  },
};

const stage = join(out, 'stage');
rmSync(out, { recursive: true, force: true });
mkdirSync(stage, { recursive: true });

async function bundle(write) {
  return build({
    absWorkingDir: root,
    entryPoints: Object.fromEntries(entries),
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node22',
    outdir: join(stage, 'dist'),
    entryNames: '[name]',
    chunkNames: 'chunk-[hash]',
    external: Object.keys(outside),
    plugins: [ownUrlPlugin],
    metafile: true,
    write,
    logLevel: 'warning',
  });
}

for (;;) {
  const { metafile } = await bundle(false);
  let added = false;
  for (const input of Object.keys(metafile.inputs)) added = scan(resolve(root, input)) || added;
  if (!added) break;
}
console.error(`pack-cli: esbuild, entry points ${[...entries.keys()].join(', ')}`);
await bundle(true);

// ---------------------------------------------------------------- the package

const pkg = {
  name: cliPkg.name,
  version: cliPkg.version,
  description: cliPkg.description,
  keywords: cliPkg.keywords,
  license: cliPkg.license,
  repository: cliPkg.repository,
  homepage: cliPkg.homepage,
  bugs: cliPkg.bugs,
  type: 'module',
  bin: { nbd: './dist/bin.js' },
  files: ['dist', 'README.md', 'LICENSE'],
  engines: cliPkg.engines,
  dependencies: outside,
};
writeFileSync(join(stage, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
copyFileSync(join(cliDir, 'README.md'), join(stage, 'README.md'));
copyFileSync(join(root, 'LICENSE'), join(stage, 'LICENSE'));
const made = execFileSync('npm', ['pack', '--silent', '--pack-destination', out], { cwd: stage, encoding: 'utf8' })
  .trim()
  .split('\n')
  .at(-1);
rmSync(stage, { recursive: true });
console.log(join(out, made));
