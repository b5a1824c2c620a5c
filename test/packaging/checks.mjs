// What every published package must have, checked on its package.json and on the
// file list of its packed tarball. Each check throws with everything it found wrong.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

function fail(problems, what) {
  if (problems.length > 0) throw new Error(`${what}:\n- ${problems.join('\n- ')}`);
}

/** The npm-facing fields: metadata, exports with types first and a default condition. */
export function checkMetadata(pkg, rootPkg) {
  const problems = [];
  const dir = `packages/${pkg.name.replace(/^@nbd\//, '')}`;
  if (!pkg.name.startsWith('@nbd/')) problems.push(`name ${pkg.name} is not in the @nbd scope`);
  if (typeof pkg.description !== 'string' || pkg.description.length < 20) problems.push('description missing or too short');
  if (!Array.isArray(pkg.keywords) || !pkg.keywords.includes('nbd')) problems.push('keywords missing (or without "nbd")');
  if (pkg.license !== 'MIT') problems.push(`license is ${pkg.license}, not MIT`);
  if (pkg.repository?.url !== rootPkg.repository?.url)
    problems.push(`repository.url ${pkg.repository?.url} differs from the root's ${rootPkg.repository?.url}`);
  if (pkg.repository?.directory !== dir) problems.push(`repository.directory should be ${dir}`);
  if (typeof pkg.homepage !== 'string' || !pkg.homepage.startsWith('https://')) problems.push('homepage missing');
  if (typeof pkg.bugs?.url !== 'string') problems.push('bugs.url missing');
  if (pkg.type !== 'module') problems.push('type is not "module"');
  if (pkg.engines?.node !== rootPkg.engines?.node)
    problems.push(`engines.node ${pkg.engines?.node} differs from the root's ${rootPkg.engines?.node}`);
  if (pkg.sideEffects !== false && !Array.isArray(pkg.sideEffects)) problems.push('sideEffects is neither false nor a list of files');
  if (typeof pkg.exports?.['.'] !== 'object') problems.push('exports["."] is not a conditions object');
  // Every entry point (".", and subpaths such as @nbd/node's "./internal"), alike.
  for (const [path, entry] of Object.entries(pkg.exports ?? {})) {
    if (path === './package.json') continue;
    if (typeof entry !== 'object' || entry === null) {
      problems.push(`exports["${path}"] is not a conditions object`);
      continue;
    }
    const conditions = Object.keys(entry);
    if (conditions[0] !== 'types') problems.push(`exports["${path}"]: "types" must come first, got ${conditions.join(', ')}`);
    if (!conditions.includes('import')) problems.push(`exports["${path}"] has no "import"`);
    if (conditions.at(-1) !== 'default')
      problems.push(`exports["${path}"]: "default" must be there, and last (require() of the ES module)`);
  }
  if (!Array.isArray(pkg.files) || pkg.files.some((f) => /(^|\/)tests?(\/|$)/.test(f))) problems.push('files missing, or lists tests');
  if (pkg.name === '@nbd/linux' && JSON.stringify(pkg.os) !== '["linux"]') problems.push(`os is ${JSON.stringify(pkg.os)}, not ["linux"]`);
  fail(problems, `${pkg.name} package.json`);
}

const forbidden = [
  [/\.test\.[cm]?[jt]s$|\.test\.d\.ts/, 'a test'],
  [/(^|\/)(fixtures|__fixtures__|test|tests)\//, 'test material'],
  [/\.tsbuildinfo$/, 'a build cache'],
  [/(^|\/)node_modules\//, 'node_modules'],
];

/**
 * The tarball's files: LICENSE (the root's), README, the entry points; no tests,
 * fixtures or stale build output; no workspace: ranges left in package.json.
 */
export async function checkTarball(p, listing, read, root) {
  const files = listing
    .split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ''));
  const has = new Set(files);
  const problems = [];
  for (const need of ['package.json', 'LICENSE', 'README.md', 'dist/index.js', 'dist/index.d.ts']) {
    if (!has.has(need)) problems.push(`${need} is missing`);
  }
  // Whatever an entry point names (types, import, default of each export) is in the tarball.
  for (const [path, entry] of Object.entries(p.pkg.exports ?? {})) {
    for (const target of new Set(typeof entry === 'string' ? [entry] : Object.values(entry ?? {}))) {
      if (typeof target === 'string' && !has.has(target.replace(/^\.\//, '')))
        problems.push(`exports["${path}"] names ${target}, which is missing`);
    }
  }
  for (const f of files) {
    for (const [re, what] of forbidden) if (re.test(f)) problems.push(`${f} is ${what}`);
  }
  // A dist/*.js whose source is gone is left over from an older build (tsc -b never deletes).
  if (files.some((f) => f.startsWith('src/'))) {
    for (const f of files.filter((x) => /^dist\/.*\.js$/.test(x))) {
      const src = f.replace(/^dist\//, 'src/').replace(/\.js$/, '.ts');
      if (!has.has(src)) problems.push(`${f} has no ${src}: stale build output (rm -rf dist; tsc -b)`);
    }
  }
  if (has.has('LICENSE') && (await read('LICENSE')) !== readFileSync(join(root, 'LICENSE'), 'utf8')) {
    problems.push(`LICENSE differs from the root LICENSE (cp LICENSE ${p.dir}/)`);
  }
  const packedJson = await read('package.json');
  if (packedJson.includes('workspace:')) problems.push('the packed package.json still has workspace: ranges');
  fail(problems, `${p.pkg.name} tarball`);
}
