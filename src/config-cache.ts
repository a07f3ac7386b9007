// A TypeScript config compiled once to an ES module under `.pipeline/config/` next to it,
// keyed by its path and content, so later runs import plain JavaScript: no compiler and
// no loader hooks at start-up. esbuild is loaded only to compile.
//
// The compiled file lives in another directory than its source, so every relative
// import is rewritten to an absolute file URL, and `import.meta.url`, `dirname` and
// `filename` are replaced by the source's. Package imports stay as written: Node resolves
// them from `.pipeline/config/` exactly as from the config's directory. A config that
// imports another TypeScript file cannot run as plain JavaScript; `compiledConfig` says
// so (undefined) and the caller loads it through tsx.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { writeFileAtomic } from './atomic.ts';
import { Failure } from './failure.ts';
import { bytesHasher, stringHasher } from './hasher.ts';
import type { FileHasher } from './types.ts';

/** Bump when the compile options change, so older compiled files are not reused. */
const COMPILER_REVISION = 1;
/** Compiled files of older versions of a config are removed once this old (another run may still import one). */
const STALE_AFTER_MS = 10 * 60_000;

/**
 * The path of `file` compiled to JavaScript, compiling it on first use; undefined when it
 * needs a TypeScript loader (it imports other `.ts` files) or its directory is read-only.
 * A syntax error is a `config` Failure naming the line and column. `hasher` (the run's
 * stat cache) knows the file's digest on a repeat run without reading the file.
 */
export async function compiledConfig(file: string, hasher: FileHasher): Promise<string | undefined> {
  const dir = join(dirname(file), '.pipeline', 'config');
  const hashText = await stringHasher();
  // Keyed by the file's content digest (the stat cache's, which needs only a stat when
  // the file is unchanged), not by hashing its text: reading and hashing a large config
  // is most of what finding its compilation costs. Only this user's own compilations
  // share the directory.
  const keyOf = (digest: string): string => hashText(`${COMPILER_REVISION}\0${file}\0${digest}`);
  const known = await digestOf(hasher, file);
  if (known !== undefined) {
    const found = existingCompilation(dir, file, keyOf(known));
    if (found !== undefined) return found.compiled;
  }
  // Synchronous: a thread-pool round trip costs more than the read. The key is of these
  // very bytes, so a file edited since the stat above is compiled as it now is.
  const bytes = readFileSync(file);
  const key = keyOf((await bytesHasher())(bytes));
  const found = existingCompilation(dir, file, key);
  if (found !== undefined) return found.compiled;

  const code = await compile(file, bytes.toString('utf8'));
  const { target, needsLoader } = compilationPaths(dir, file, key);
  try {
    await mkdir(dir, { recursive: true });
    if (code === undefined) await writeFileAtomic(needsLoader, 'this config imports TypeScript files: it loads through tsx\n');
    else await writeFileAtomic(target, code);
  } catch {
    return undefined; // a read-only tree: the loader it is
  }
  await removeOlderCompilations(dir, basename(file), code === undefined ? needsLoader : target);
  return code === undefined ? undefined : target;
}

function compilationPaths(dir: string, file: string, key: string): { target: string; needsLoader: string } {
  return {
    target: join(dir, `${basename(file)}.${key}.mjs`),
    // The verdict "needs the loader" is cached too, so such a config is compiled once only.
    needsLoader: join(dir, `${basename(file)}.${key}.needs-loader`),
  };
}

/** The compilation made for `key`, if any: the compiled file, or undefined for "needs the loader". */
function existingCompilation(dir: string, file: string, key: string): { compiled: string | undefined } | undefined {
  const { target, needsLoader } = compilationPaths(dir, file, key);
  if (existsSync(target)) return { compiled: target };
  if (existsSync(needsLoader)) return { compiled: undefined };
  return undefined;
}

/**
 * The file's digest through the stat cache: without a read when it knows the file as it
 * is, else read once and remembered for the next run. Undefined when the file cannot be
 * read (the read of its bytes then says why).
 */
async function digestOf(hasher: FileHasher, file: string): Promise<string | undefined> {
  try {
    return (await hasher.hash(file)).xxh;
  } catch {
    return undefined;
  }
}

async function compile(file: string, source: string): Promise<string | undefined> {
  const { build, stop } = await optionalDependency(() => import('esbuild'), 'esbuild', 'a TypeScript config compiles with esbuild');
  let needsLoader = false;
  let output: string;
  try {
    const result = await build({
      stdin: { contents: source, sourcefile: file, resolveDir: dirname(file), loader: file.endsWith('x') ? 'tsx' : 'ts' },
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      logLevel: 'silent',
      define: {
        'import.meta.url': JSON.stringify(pathToFileURL(file).href),
        'import.meta.dirname': JSON.stringify(dirname(file)),
        'import.meta.filename': JSON.stringify(file),
      },
      plugins: [
        {
          name: 'imports-stay-imports',
          setup(builder) {
            builder.onResolve({ filter: /.*/ }, (args) => {
              const path = localPath(args.path, args.resolveDir);
              if (path === undefined) return { path: args.path, external: true };
              if (!isPlainJavaScript(path)) needsLoader = true;
              return { path: pathToFileURL(path).href, external: true };
            });
          },
        },
      ],
    });
    output = result.outputFiles[0]!.text;
  } catch (error) {
    throw syntaxFailure(file, error);
  } finally {
    // esbuild compiles in a child process that would otherwise live as long as the run.
    await stop();
  }
  return needsLoader ? undefined : output;
}

/** The file a relative, absolute or file: import names; undefined for a package or builtin. */
function localPath(specifier: string, from: string): string | undefined {
  if (specifier.startsWith('file:')) return fileURLToPath(specifier);
  if (specifier.startsWith('./') || specifier.startsWith('../') || specifier === '.' || specifier === '..') return resolve(from, specifier);
  return isAbsolute(specifier) ? specifier : undefined;
}

/**
 * Whether Node imports the file as it is. `./x.js` in TypeScript often means `./x.ts`
 * (NodeNext style), so a `.js` that does not exist counts as TypeScript.
 */
function isPlainJavaScript(path: string): boolean {
  return /\.(?:[cm]?js|json)$/.test(path) && existsSync(path);
}

type EsbuildMessage = { text: string; location?: { file: string; line: number; column: number } | null };

/** esbuild's first error as a one-line `config` Failure: `file:line:column: what`. */
function syntaxFailure(file: string, error: unknown): unknown {
  const first = (error as { errors?: EsbuildMessage[] }).errors?.[0];
  if (!first) return error;
  const where = first.location
    ? `${first.location.file ? resolve(dirname(file), first.location.file) : file}:${first.location.line}:${first.location.column + 1}`
    : file;
  return new Failure('config', `${where}: ${first.text}`);
}

/**
 * The first syntax error in a config or a local file it imports, as a one-line `config`
 * Failure naming file:line:column; undefined when esbuild finds none. For errors that
 * Node's own loader (a JavaScript config) or tsx reports without a usable location.
 */
export async function locateSyntaxError(file: string): Promise<Failure | undefined> {
  const esbuild = await import('esbuild').catch(() => undefined);
  if (esbuild === undefined) return undefined; // left out of the install: Node's own message it is
  const { build, stop } = esbuild;
  try {
    await build({
      entryPoints: [file],
      // Locations in errors are relative to this.
      absWorkingDir: dirname(file),
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'node',
      logLevel: 'silent',
      plugins: [
        {
          name: 'only-local-files',
          setup(builder) {
            builder.onResolve({ filter: /.*/ }, (args) =>
              localPath(args.path, args.resolveDir) === undefined ? { path: args.path, external: true } : undefined,
            );
          },
        },
      ],
    });
    return undefined;
  } catch (error) {
    const failure = syntaxFailure(file, error);
    return failure instanceof Failure ? failure : undefined;
  } finally {
    await stop();
  }
}

async function removeOlderCompilations(dir: string, name: string, keep: string): Promise<void> {
  const prefix = `${name}.`;
  for (const entry of await readdir(dir).catch(() => [])) {
    const path = join(dir, entry);
    if (!entry.startsWith(prefix) || path === keep) continue;
    const info = await stat(path).catch(() => undefined);
    if (info && Date.now() - info.mtimeMs > STALE_AFTER_MS) await rm(path, { force: true });
  }
}

/**
 * esbuild and tsx are optional dependencies: a plain-JavaScript config needs neither, so an
 * install may leave them out (`npm install --omit=optional`). A config that needs one then
 * says which, in one line.
 */
export async function optionalDependency<T>(load: () => Promise<T>, name: string, why: string): Promise<T> {
  try {
    return await load();
  } catch (error) {
    if ((error as { code?: unknown }).code !== 'ERR_MODULE_NOT_FOUND' || !String((error as Error).message).includes(`'${name}'`)) throw error;
    throw new Failure(
      'config',
      `${why}, an optional dependency this install left out: npm install ${name} (or write the config as plain JavaScript, pipeline.config.mjs)`,
    );
  }
}
