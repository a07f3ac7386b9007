// The largest functions and files of the engine and the task kinds, for reviews that ask
// where the code is hard to read in one sitting:
//
//   node --import=tsx scripts/sizes.ts [--most N] [dirs…]      (default: src tasks index.ts, top 10)
//
// A function is any function declaration, method, or function or arrow expression; its
// size is its line count from its first line to its last, nested functions included.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import ts from 'typescript';

const { values, positionals } = parseArgs({ options: { most: { type: 'string', default: '10' } }, allowPositionals: true });
const most = Number(values.most);
const roots = positionals.length > 0 ? positionals : ['src', 'tasks', 'index.ts'];

function sourceFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return path.endsWith('.ts') ? [path] : [];
  return readdirSync(path).flatMap((name) => sourceFiles(join(path, name)));
}

interface Sized {
  readonly where: string;
  readonly lines: number;
}

const files: Sized[] = [];
const functions: Sized[] = [];
for (const file of roots.flatMap(sourceFiles)) {
  const text = readFileSync(file, 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const where = relative(process.cwd(), file);
  files.push({ where, lines: source.getLineAndCharacterOfPosition(text.length).line + (text.endsWith('\n') ? 0 : 1) });
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body) {
      const first = source.getLineAndCharacterOfPosition(node.getStart(source)).line;
      const last = source.getLineAndCharacterOfPosition(node.getEnd()).line;
      functions.push({ where: `${where}:${first + 1} ${nameOf(node)}`, lines: last - first + 1 });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
}

function nameOf(node: ts.Node): string {
  const named = node as ts.Node & { name?: ts.Node };
  if (named.name && (ts.isIdentifier(named.name) || ts.isPrivateIdentifier(named.name))) return named.name.text;
  const parent = node.parent;
  if (parent && (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent)) && ts.isIdentifier(parent.name)) return parent.name.text;
  return '(anonymous)';
}

const table = (title: string, rows: readonly Sized[]): void => {
  console.log(title);
  for (const row of [...rows].sort((a, b) => b.lines - a.lines).slice(0, most)) console.log(`  ${String(row.lines).padStart(5)}  ${row.where}`);
};
table(`largest ${most} functions (lines)`, functions);
table(`largest ${most} files (lines)`, files);
