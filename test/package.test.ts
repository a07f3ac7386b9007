// The package as a new image repository gets it: `npm pack` of this repository, the
// tarball installed into an empty directory (its size printed and held under the target),
// then `npx pipeline init`, `npx pipeline --dry-run`, a second init that changes nothing,
// and the consumer's own `tsc` under TypeScript 5.4.5, 5.9 and the newest release, with
// strict NodeNext settings, `exactOptionalPropertyTypes`, `skipLibCheck: false` and no
// @types/node. Then the installed CLI builds one demo image for real (packer's null source,
// a file: upstream), and a TypeScript config in an install without esbuild says so in one
// line. No network beyond the npm registry.
//
// The steps are serial tests sharing one temp tree, each taking a heavy slot while it
// works. About two minutes on an idle 2-core machine, most of it npm installing (from
// npm's cache when it is warm) and three TypeScript compilers checking the configs.
import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { cp, lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './support/engine-project.ts';
import { heavySlot } from './support/heavy-slots.ts';

interface PackageJson {
  name: string;
  version: string;
  bin: Record<string, string>;
  exports: Record<string, Record<string, string>>;
  repository?: { url?: string };
  scripts?: Record<string, string>;
}
const PACKAGE = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as PackageJson;

/** What a consumer's node_modules may weigh with this package alone (issue 23). */
const INSTALL_BUDGET_BYTES = 35 * 1024 * 1024;
/** The TypeScript releases a consumer's tsc is tried with: the oldest the types need (NoInfer), the one this repository builds with, the newest. */
const TYPESCRIPTS = { 'typescript-5.4': 'typescript@5.4.5', 'typescript-5.9': 'typescript@5.9', 'typescript-newest': 'typescript@latest' };

/** An install or three compilers on a busy 2-core machine can take minutes. */
const STEP_TIMEOUT_MS = 10 * 60_000;
/** The consumer's own checks, on top of the tsconfig.json init lays out. */
const STRICTER_TSCONFIG = { extends: './tsconfig.json', compilerOptions: { noUncheckedIndexedAccess: true }, include: ['*.ts'] };

/** The same, in a repository with @types/node. */
const WITH_NODE_TSCONFIG = { extends: './tsconfig.stricter.json', compilerOptions: { types: ['node'] } };
/** The version of a package this repository is checked with. */
const installedVersion = (name: string): string =>
  (JSON.parse(readFileSync(join(REPO, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;

/** A config the types must reject: `@ts-expect-error` fails tsc if they do not. */
const TYPO_CONFIG = `import { defineConfig } from '${PACKAGE.name}';
export default defineConfig({
  bases: { trixie: { url: 'https://example.invalid/base.qcow2', checksumsUrl: 'https://example.invalid/SHA512SUMS' } },
  // @ts-expect-error: "trixy" is not a declared base, and the package's types say so
  images: { 'pve-9': { base: 'trixy' } },
});
`;

interface Result {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

let work: string | undefined;
let tarball: string | undefined;
test.after.always(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** The environment without what an enclosing `npm test` sets for its scripts. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key)));
}

function run(command: string, args: readonly string[], cwd: string): Promise<Result> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd, env: cleanEnv(), maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The empty directory the tarball is installed into, and the tarball: made by the first step. */
function consumer(): string {
  if (!work) throw new Error('an earlier step (npm pack) did not run');
  return join(work, 'images');
}
function packed(): string {
  if (!tarball) throw new Error('an earlier step (npm pack) did not make a tarball');
  return tarball;
}
const npx = (...args: string[]): Promise<Result> => run('npx', ['pipeline', ...args], consumer());

/** Bytes on disk under `dir` (a file hard-linked twice counted once, as du counts), and the packages in it. */
async function installedSize(dir: string): Promise<{ bytes: number; packages: number }> {
  let bytes = 0;
  let packages = 0;
  const seen = new Set<string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isDirectory()) continue;
    const info = await lstat(join(entry.parentPath, entry.name));
    const inode = `${info.dev}:${info.ino}`;
    if (!seen.has(inode)) bytes += info.size;
    seen.add(inode);
    if (entry.name === 'package.json' && /node_modules\/(?:@[^/]+\/)?[^/@]+$/.test(entry.parentPath)) packages++;
  }
  return { bytes, packages };
}

/** Every file (and link) of the consumer but node_modules/, with its bytes, mode and modification time. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    if (!(entry.isFile() || entry.isSymbolicLink()) || path.includes('/node_modules/')) continue;
    const info = await lstat(path);
    files.set(
      path,
      `${info.mode} ${info.mtimeMs} ${createHash('sha256')
        .update(await readFile(path))
        .digest('hex')}`,
    );
  }
  return files;
}

test.serial('npm pack ships the CLI, its types, the schema, the example templates and the README: no empty file, no source', async (t) => {
  await heavySlot(t);
  work = await mkdtemp(join(tmpdir(), 'pipeline-package-'));
  const pack = await run('npm', ['pack', '--json', '--pack-destination', work], REPO);
  t.is(pack.code, 0, pack.stderr);
  // prepack's output (nothing when dist/ is fresh) may come first; the report is the array.
  const [report] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as [{ filename: string; files: { path: string; size: number }[] }];
  tarball = join(work, report.filename);
  const files = report.files.map((file) => file.path).sort();
  t.is(PACKAGE.name, '@vmpipeline/pipeline');
  t.deepEqual(PACKAGE.bin, { pipeline: 'bin/pipeline.js' });
  t.regex(PACKAGE.repository?.url ?? '', /^git\+https:\/\/github\.com\/[^/]+\/[^/]+\.git$/, 'a repository field, so registries link the source');
  for (const needed of [
    'bin/pipeline.js',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/src/index.d.ts',
    'dist/src/cli.js',
    'dist/tasks/init.js',
    'schema/pipeline-output.v1.schema.json',
    'templates/pve-9/template.pkr.hcl',
    'templates/debian-12/cleanup.sh',
    // debian-12's and debian-13's template.pkr.hcl link here, and npm packs no link: init makes them.
    'shared/templates/debian.pkr.hcl',
    'shared/scripts/cleanup-common.sh',
    'README.md',
    'package.json',
  ]) {
    t.true(files.includes(needed), `the tarball lacks ${needed}`);
  }
  for (const [entry, conditions] of Object.entries(PACKAGE.exports)) {
    for (const condition of ['types', 'default']) {
      const target = conditions[condition]?.replace(/^\.\//, '');
      t.true(target !== undefined && files.includes(target), `exports["${entry}"].${condition} (${target}) is in the tarball`);
    }
  }
  const stray = files.filter((file) => !/^(bin|dist|schema|templates|shared)\//.test(file) && file !== 'README.md' && file !== 'package.json');
  t.deepEqual(stray, [], 'no tests, benches, CI, demo or repository config in the tarball');
  t.deepEqual(
    files.filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts')),
    [],
    'TypeScript sources stay in the repository',
  );
  t.deepEqual(
    report.files.filter((file) => file.size === 0).map((file) => file.path),
    [],
    'no empty file',
  );
  const lifecycle = Object.keys(PACKAGE.scripts ?? {}).filter((name) => /^(pre|post)?(install|prepare)$/.test(name));
  t.deepEqual(lifecycle, [], 'nothing runs when a consumer installs the package');

  // The README is read on the registry and in node_modules: a relative link must name a
  // file the package ships; what it does not ship is linked by its absolute URL.
  const readme = await readFile(join(REPO, 'README.md'), 'utf8');
  const relativeLinks = [...readme.matchAll(/\]\(([^)\s]+)\)/g)].map((match) => match[1]!).filter((target) => !/^(?:[a-z]+:|#)/.test(target));
  for (const target of relativeLinks) t.true(files.includes(target.replace(/#.*$/, '')), `README links ${target}, which the package does not ship`);
});

test.serial('the tarball installs into an empty directory: under the size target, no warning of its own, a valid tree, no @types', async (t) => {
  await heavySlot(t);
  t.timeout(STEP_TIMEOUT_MS);
  const repo = consumer();
  await mkdir(repo, { recursive: true });
  await writeFile(join(repo, 'package.json'), `${JSON.stringify({ name: 'images', private: true }, null, 2)}\n`);
  const install = await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--save-dev', packed()], repo);
  t.is(install.code, 0, install.stderr);
  const said = `${install.stdout}${install.stderr}`;
  t.notRegex(said, /EBADENGINE/, 'every dependency supports the Node the package claims');
  t.notRegex(said, new RegExp(`install-scripts.*${PACKAGE.name}@`), 'no install script of its own');
  const tree = await run('npm', ['ls', '--all'], repo);
  t.is(tree.code, 0, `npm ls finds no invalid or missing dependency:\n${tree.stderr}`);
  t.false(existsSync(join(repo, 'node_modules', ...PACKAGE.name.split('/'), 'src')), 'installed from the tarball, not linked to the repository');
  t.false(existsSync(join(repo, 'node_modules', '@types')), 'no @types package comes with it (a consumer without @types/node checks no Node types)');

  const { bytes, packages } = await installedSize(join(repo, 'node_modules'));
  t.log(`installed: ${packages} packages, ${(bytes / 2 ** 20).toFixed(1)} MiB in node_modules (target ≤ ${INSTALL_BUDGET_BYTES / 2 ** 20} MiB)`);
  t.true(bytes <= INSTALL_BUDGET_BYTES, `node_modules holds ${(bytes / 2 ** 20).toFixed(1)} MiB`);
});

test.serial('npx pipeline init lays out a repository that npx pipeline --dry-run plans; a second init changes nothing', async (t) => {
  await heavySlot(t);
  const repo = consumer();
  const init = await npx('init');
  t.is(init.code, 0, init.stderr);
  for (const file of [
    'pipeline.config.ts',
    'templates/debian-12/template.pkr.hcl',
    'templates/debian-13/cleanup.sh',
    'shared/scripts/detect-versions.sh',
    'tsconfig.json',
  ]) {
    t.true(existsSync(join(repo, file)), file);
  }
  t.is(JSON.parse(await readFile(join(repo, 'package.json'), 'utf8')).type, 'module');
  t.regex(await readFile(join(repo, '.gitignore'), 'utf8'), /^\.pipeline\/$/m);
  t.regex(init.stdout, /^ {2}npm install -D typescript && npx tsc /m);

  const dry = await npx('--dry-run', '--json');
  t.is(dry.code, 0, dry.stderr);
  const plan = JSON.parse(dry.stdout) as { command: string; stale: string[] };
  t.is(plan.command, 'dry-run');
  t.deepEqual(plan.stale, ['bookworm:download', 'debian-12:build', 'debian-12:checksum', 'trixie:download', 'debian-13:build', 'debian-13:checksum']);
  t.notRegex(dry.stderr, /remote cache/);
  const readable = await npx('--dry-run');
  t.is(readable.code, 0, readable.stderr);
  t.regex(readable.stdout, /^6 of 6 would run \(dry run: nothing was changed\)$/m);

  const before = await snapshot(repo);
  const again = await npx('init');
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /^nothing to do: every file was already there$/m);
  t.deepEqual([...(await snapshot(repo)).entries()], [...before.entries()], 'not a byte, mode or modification time changed');
});

test.serial(
  "the consumer's tsc checks the config init wrote and the documents' configs, under TypeScript 5.4.5, 5.9 and the newest, without @types/node and with it",
  async (t) => {
    await heavySlot(t);
    t.timeout(STEP_TIMEOUT_MS);
    const repo = consumer();
    const install = await run(
      'npm',
      ['install', '--no-audit', '--no-fund', '--prefer-offline', '--save-dev', ...Object.entries(TYPESCRIPTS).map(([alias, spec]) => `${alias}@npm:${spec}`)],
      repo,
    );
    t.is(install.code, 0, install.stderr);
    t.false(existsSync(join(repo, 'node_modules', '@types', 'node')));
    await cp(join(REPO, 'test', 'fixtures', 'good-config', 'pipeline.config.ts'), join(repo, 'engine.config.ts'));
    for (const document of ['README.md', 'docs/configuration.md']) {
      const examples = configExamples(await readFile(join(REPO, document), 'utf8'));
      t.true(examples.length >= 1, `${document} shows a config`);
      const stem = document.replace(/\.md$/, '').replaceAll('/', '-');
      for (const [index, example] of examples.entries()) await writeFile(join(repo, `${stem}-${index}.config.ts`), example);
    }
    await writeFile(join(repo, 'typo.config.ts'), TYPO_CONFIG);
    await writeFile(join(repo, 'tsconfig.stricter.json'), `${JSON.stringify(STRICTER_TSCONFIG, null, 2)}\n`);
    for (const alias of Object.keys(TYPESCRIPTS)) {
      const tsc = join(repo, 'node_modules', alias, 'bin', 'tsc');
      const version = (await run(process.execPath, [tsc, '--version'], repo)).stdout.trim();
      // init's tsconfig.json as it is (the config alone), then everything with the stricter one.
      for (const project of ['tsconfig.json', 'tsconfig.stricter.json']) {
        const check = await run(process.execPath, [tsc, '-p', project], repo);
        t.is(check.code, 0, `${version}, ${project}:\n${check.stdout}${check.stderr}`);
        t.is(check.stdout, '', `${version}: no error from the package, no unused @ts-expect-error`);
      }
      t.log(`${version}: the configs check`);
    }

    // And in a repository that has Node's types too (the stricter settings, with them).
    const nodeTypes = await run(
      'npm',
      ['install', '--no-audit', '--no-fund', '--prefer-offline', '--save-dev', `@types/node@${installedVersion('@types/node')}`],
      repo,
    );
    t.is(nodeTypes.code, 0, nodeTypes.stderr);
    await writeFile(join(repo, 'tsconfig.node.json'), `${JSON.stringify(WITH_NODE_TSCONFIG, null, 2)}\n`);
    for (const alias of Object.keys(TYPESCRIPTS)) {
      const check = await run(process.execPath, [join(repo, 'node_modules', alias, 'bin', 'tsc'), '-p', 'tsconfig.node.json'], repo);
      t.is(check.code, 0, `${alias} with @types/node:\n${check.stdout}${check.stderr}`);
    }
  },
);

test.serial('the installed CLI builds a demo image for real: --help, --version, a dry run, a run, then all fresh', async (t) => {
  await heavySlot(t);
  t.timeout(STEP_TIMEOUT_MS);
  // The demo inside the repository init made: its config reaches init's copy of shared/
  // through '../shared', and imports the package from the repository's node_modules.
  const demo = join(consumer(), 'demo');
  await mkdir(demo);
  await cp(join(REPO, 'demo', 'templates'), join(demo, 'templates'), { recursive: true });
  await cp(join(REPO, 'demo', 'scripts'), join(demo, 'scripts'), { recursive: true });
  await cp(join(REPO, 'demo', 'pipeline.config.ts'), join(demo, 'pipeline.config.ts'));
  const inDemo = (...args: string[]): Promise<Result> => run('npx', ['pipeline', '--config', join(demo, 'pipeline.config.ts'), ...args], consumer());

  const help = await inDemo('--help');
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /^usage: pipeline \[targets…\] \[options\]/);
  const version = await npx('--version');
  t.is(version.stdout.trim(), PACKAGE.version);

  const chain = ['upstream', 'bookworm:download', 'debian-12:build', 'debian-12:checksum', 'debian-12:publish'];
  const dry = await inDemo('debian-12:publish', '--dry-run', '--json');
  t.is(dry.code, 0, dry.stderr);
  t.deepEqual((JSON.parse(dry.stdout) as { stale: string[] }).stale, chain);
  t.false(existsSync(join(demo, 'images')), 'a dry run changes nothing');

  await mkdir(join(demo, 'publish'));
  const real = await inDemo('debian-12:publish', '--json');
  t.is(real.code, 0, real.stderr);
  const summary = JSON.parse(real.stdout) as { ok: boolean; nodes: { id: string; status: string }[] };
  t.true(summary.ok);
  t.deepEqual(
    summary.nodes.map((node) => [node.id, node.status]),
    chain.map((id) => [id, 'ran']),
  );
  t.notRegex(real.stderr, /remote cache/, 'the demo names no release');
  const recorded = (await readFile(join(demo, 'images', 'debian-12', 'debian-12.qcow2.sha256'), 'utf8')).split(/\s+/)[0] ?? '';
  const published = createHash('sha256')
    .update(await readFile(join(demo, 'publish', 'debian-12.img')))
    .digest('hex');
  t.is(published, recorded, 'the published image is the one built and checksummed');

  const again = await inDemo('debian-12:publish');
  t.is(again.code, 0, again.stderr);
  t.regex(`${again.stdout}${again.stderr}`, /0 ran, 5 fresh/, 'a second run finds everything fresh');
});

test.serial('an install without the optional esbuild loads a TypeScript config only once it is installed, and says so in one line', async (t) => {
  await heavySlot(t);
  const repo = consumer();
  const esbuild = join(repo, 'node_modules', 'esbuild');
  // What `npm install --omit=optional` leaves: no esbuild (its binary package goes with it).
  await rename(esbuild, `${esbuild}.away`);
  try {
    // An edited config is compiled afresh (the compiled copy of the old one stays valid).
    await writeFile(join(repo, 'pipeline.config.ts'), `${await readFile(join(repo, 'pipeline.config.ts'), 'utf8')}// edited\n`);
    const without = await npx('--dry-run');
    t.is(without.code, 2);
    t.is(without.stderr.trimEnd().split('\n').length, 1, without.stderr);
    t.regex(
      without.stderr,
      /pipeline\.config\.ts: a TypeScript config compiles with esbuild, an optional dependency this install left out: npm install esbuild/,
    );
  } finally {
    await rename(`${esbuild}.away`, esbuild);
  }
  const back = await npx('--dry-run');
  t.is(back.code, 0, back.stderr);
});

/** Every ```ts block of a document that imports the package (or its engine): what a user would copy. */
function configExamples(markdown: string): string[] {
  const imports = new RegExp(`from '${PACKAGE.name}(?:/engine)?'`);
  return [...markdown.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]!).filter((code) => imports.test(code));
}
