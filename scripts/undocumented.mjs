// Lists every name a package exports (from its src/index.ts) that has no doc comment,
// nor do its members (properties and methods of exported classes and interfaces):
// what an editor hover would show empty.  node scripts/undocumented.mjs [package ...]
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';

const root = new URL('..', import.meta.url).pathname;
const names = process.argv.slice(2).length ? process.argv.slice(2) : readdirSync(join(root, 'packages'));
const entries = names.map((n) => join(root, 'packages', n, 'src', 'index.ts')).filter((f) => existsSync(f));
const program = ts.createProgram(entries, {
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  target: ts.ScriptTarget.ES2023,
  strict: true,
});
const checker = program.getTypeChecker();
let missing = 0;
const seen = new Set();
for (const entry of entries) {
  const pkg = entry.split('/').at(-3);
  const sf = program.getSourceFile(entry);
  const mod = checker.getSymbolAtLocation(sf);
  for (const exp of checker.getExportsOfModule(mod)) {
    const sym = exp.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exp) : exp;
    const decl = sym.declarations?.[0];
    if (!decl?.getSourceFile().fileName.includes('/packages/')) continue;
    const where = `${decl.getSourceFile().fileName.replace(root, '')}`;
    const key = `${where}:${sym.name}`;
    const report = (what) => {
      if (!seen.has(`${key}.${what}`)) {
        seen.add(`${key}.${what}`);
        missing++;
        console.log(`${pkg}\t${what}\t${where}`);
      }
    };
    if (sym.getDocumentationComment(checker).length === 0) report(exp.name);
    if (sym.flags & (ts.SymbolFlags.Class | ts.SymbolFlags.Interface)) {
      for (const [mname, m] of sym.members ?? []) {
        if (mname.startsWith('#') || mname === '__constructor') continue;
        const md = m.declarations?.[0];
        if (md && ts.getCombinedModifierFlags(md) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) continue;
        if (m.getDocumentationComment(checker).length === 0) report(`${exp.name}.${mname}`);
      }
    }
  }
}
console.log(`${missing} undocumented`);
process.exit(missing ? 1 : 0);
