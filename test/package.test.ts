// The package as another image repository gets it: `npm pack` of this repository, the
// tarball installed into a fresh project with its own strict tsconfig.json, the demo's
// config and templates copied in, then the user's own `tsc`, `npx pipeline --help`, a dry
// run and a real run of one image (packer's null source, a file: upstream; no network
// beyond the npm registry for the install).
//
// The steps are serial tests sharing one temp tree, each taking a heavy slot while it
// works. About 1.5 minutes on an idle 2-core machine, most of it npm install (from npm's
// cache when it is warm) and the consumer's tsc over @types/node.
import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './support/engine-project.ts';
import { heavySlot } from './support/heavy-slots.ts';

interface PackageJson {
  name: string;
  version: string;
  bin: Record<string, string>;
  exports: Record<string, Record<string, string>>;
}
const PACKAGE = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as PackageJson;
/** The consumer gets the TypeScript and Node types this repository is checked with. */
const installedVersion = (name: string): string =>
  (JSON.parse(readFileSync(join(REPO, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;

/** The consumer's tsconfig.json: the usual strict settings, nothing for this package's sake. */
const CONSUMER_TSCONFIG = {
  compilerOptions: {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    skipLibCheck: false,
    types: ['node'],
    noEmit: true,
  },
  include: ['*.ts'],
};

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

/** The scratch project, and the tarball it installs: made by the first step. */
function consumer(): string {
  if (!work) throw new Error('an earlier step (npm pack) did not run');
  return join(work, 'image-repo');
}
function packed(): string {
  if (!tarball) throw new Error('an earlier step (npm pack) did not make a tarball');
  return tarball;
}

test.serial('npm pack ships the compiled CLI, its types, the schema and the README, and nothing else', async (t) => {
  await heavySlot(t);
  work = await mkdtemp(join(tmpdir(), 'pipeline-package-'));
  const pack = await run('npm', ['pack', '--json', '--pack-destination', work], REPO);
  t.is(pack.code, 0, pack.stderr);
  // prepack's output (nothing when dist/ is fresh) may come first; the report is the array.
  const [report] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as [{ filename: string; files: { path: string }[] }];
  tarball = join(work, report.filename);
  const files = report.files.map((file) => file.path).sort();
  t.is(PACKAGE.name, '@vmpipeline/pipeline');
  t.deepEqual(PACKAGE.bin, { pipeline: 'bin/pipeline.js' });
  for (const needed of [
    'bin/pipeline.js',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/src/index.d.ts',
    'dist/src/cli.js',
    'schema/pipeline-output.v1.schema.json',
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
  const stray = files.filter((file) => !/^(bin\/|dist\/|schema\/)/.test(file) && file !== 'README.md' && file !== 'package.json');
  t.deepEqual(stray, [], 'no tests, benches, CI, demo or repository config in the tarball');
  t.deepEqual(
    files.filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts')),
    [],
    'TypeScript sources stay in the repository',
  );
});

test.serial('the tarball installs into another repository with no engine warning and a valid tree', async (t) => {
  await heavySlot(t);
  const repo = consumer();
  await mkdir(repo, { recursive: true });
  await writeFile(join(repo, 'package.json'), `${JSON.stringify({ name: 'image-repo', private: true, type: 'module' }, null, 2)}\n`);
  const install = await run(
    'npm',
    [
      'install',
      '--no-audit',
      '--no-fund',
      '--prefer-offline',
      '--save-dev',
      packed(),
      `typescript@${installedVersion('typescript')}`,
      `@types/node@${installedVersion('@types/node')}`,
    ],
    repo,
  );
  t.is(install.code, 0, install.stderr);
  t.notRegex(`${install.stdout}${install.stderr}`, /EBADENGINE/, 'every dependency supports the Node the package claims');
  const tree = await run('npm', ['ls', '--all'], repo);
  t.is(tree.code, 0, `npm ls finds no invalid or missing dependency:\n${tree.stderr}`);
  t.false(existsSync(join(repo, 'node_modules', ...PACKAGE.name.split('/'), 'src')), 'installed from the tarball, not linked to the repository');
});

test.serial(
  "the consumer's own tsc checks the demo's config, the README's and the engine's under strict NodeNext with exactOptionalPropertyTypes",
  async (t) => {
    await heavySlot(t);
    const repo = consumer();
    await writeFile(join(repo, 'tsconfig.json'), `${JSON.stringify(CONSUMER_TSCONFIG, null, 2)}\n`);
    await cp(join(REPO, 'demo', 'pipeline.config.ts'), join(repo, 'pipeline.config.ts'));
    await cp(join(REPO, 'test', 'fixtures', 'good-config', 'pipeline.config.ts'), join(repo, 'engine.config.ts'));
    const examples = readmeConfigExamples(await readFile(join(REPO, 'README.md'), 'utf8'));
    t.true(examples.length >= 2, 'the README shows a config in its install section and in "Writing a config"');
    for (const [index, example] of examples.entries()) await writeFile(join(repo, `readme-${index}.config.ts`), example);
    await writeFile(join(repo, 'typo.config.ts'), TYPO_CONFIG);
    const tsc = await run(process.execPath, [join(repo, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '-p', '.'], repo);
    t.is(tsc.code, 0, tsc.stdout);
    t.is(tsc.stdout, '', 'no TS5097 from the package, no exactOptionalPropertyTypes error, no unused @ts-expect-error');
  },
);

test.serial('npx pipeline runs the installed CLI: --help, --version, a dry run and a real run of one image', async (t) => {
  await heavySlot(t);
  const repo = consumer();
  // The demo's layout: its config reaches shared/ through '../shared'.
  await cp(join(REPO, 'shared'), join(work!, 'shared'), { recursive: true });
  await cp(join(REPO, 'demo', 'templates'), join(repo, 'templates'), { recursive: true });
  await cp(join(REPO, 'demo', 'scripts'), join(repo, 'scripts'), { recursive: true });
  const npx = (...args: string[]) => run('npx', ['pipeline', ...args], repo);

  const help = await npx('--help');
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /^usage: pipeline \[targets…\] \[options\]/);
  const version = await npx('--version');
  t.is(version.stdout.trim(), PACKAGE.version);

  const chain = ['upstream', 'bookworm:download', 'debian-12:build', 'debian-12:checksum', 'debian-12:publish'];
  const dry = await npx('debian-12:publish', '--dry-run', '--json');
  t.is(dry.code, 0, dry.stderr);
  const plan = JSON.parse(dry.stdout) as { command: string; stale: string[] };
  t.is(plan.command, 'dry-run');
  t.deepEqual(plan.stale, chain);
  t.false(existsSync(join(repo, 'images')), 'a dry run changes nothing');

  await mkdir(join(repo, 'publish'));
  const real = await npx('debian-12:publish', '--json');
  t.is(real.code, 0, real.stderr);
  const summary = JSON.parse(real.stdout) as { ok: boolean; ran: number; nodes: { id: string; status: string }[] };
  t.true(summary.ok);
  t.deepEqual(
    summary.nodes.map((node) => [node.id, node.status]),
    chain.map((id) => [id, 'ran']),
  );
  const recorded = (await readFile(join(repo, 'images', 'debian-12', 'debian-12.qcow2.sha256'), 'utf8')).split(/\s+/)[0] ?? '';
  const published = createHash('sha256')
    .update(await readFile(join(repo, 'publish', 'debian-12.img')))
    .digest('hex');
  t.is(published, recorded, 'the published image is the one built and checksummed');

  const again = await npx('debian-12:publish');
  t.is(again.code, 0, again.stderr);
  t.regex(`${again.stdout}${again.stderr}`, /0 ran, 5 fresh/, 'a second run finds everything fresh');
});

/** Every ```ts block of the README that imports the package: what a user would copy. */
function readmeConfigExamples(readme: string): string[] {
  return [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]!).filter((code) => code.includes(`from '${PACKAGE.name}'`));
}
