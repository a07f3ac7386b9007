// `pipeline init` through the real CLI, in empty and half-made directories: what it lays
// out plans with the CLI, a second run changes nothing, a file already there is named and
// kept, and its examples are this repository's own templates and config. The packed
// package's init (with the consumer's tsc) is test/package.test.ts.
import test, { type ExecutionContext } from 'ava';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { REPO, startCli, type CliResult } from './support/engine-project.ts';
import { heavySlot } from './support/heavy-slots.ts';
import { DEFAULT_IMAGES, EXAMPLES, IGNORED } from '../tasks/init.ts';

/** An empty directory in which the package resolves as it does once installed. */
async function emptyRepository(t: ExecutionContext): Promise<string> {
  await heavySlot(t);
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-init-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'node_modules', '@vmpipeline'), { recursive: true });
  await symlink(REPO, join(dir, 'node_modules', '@vmpipeline', 'pipeline'));
  return dir;
}

const pipeline = (dir: string, ...args: string[]): Promise<CliResult> => startCli(dir, args).done;

/** Every file (a link as where it leads) but node_modules/, with its bytes, mode and modification time. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const files: Record<string, string> = {};
  for (const entry of entries) {
    const path = relative(dir, join(entry.parentPath, entry.name));
    if (!(entry.isFile() || entry.isSymbolicLink()) || path.startsWith('node_modules') || path.startsWith('.pipeline')) continue;
    const info = await stat(join(dir, path));
    const link = entry.isSymbolicLink() ? `-> ${await readlink(join(dir, path))} ` : '';
    files[path] = `${link}${info.mode.toString(8)} ${info.mtimeMs} ${await readFile(join(dir, path), 'utf8')}`;
  }
  return files;
}

test('init in an empty directory lays out a repository the CLI plans, and a second init changes nothing', async (t) => {
  const dir = await emptyRepository(t);
  const first = await pipeline(dir, 'init');
  t.is(first.code, 0, first.stderr);
  const files = Object.keys(await snapshot(dir)).sort();
  const templates = DEFAULT_IMAGES.flatMap((name) => [`templates/${name}/cleanup.sh`, `templates/${name}/template.pkr.hcl`]);
  t.deepEqual(files, [
    '.gitignore',
    'package.json',
    'pipeline.config.ts',
    'shared/cloud-init/meta-data',
    'shared/cloud-init/user-data.pkrtpl',
    'shared/scripts/cleanup-common.sh',
    'shared/scripts/detect-versions.sh',
    'shared/templates/debian.pkr.hcl',
    ...templates,
    'tsconfig.json',
  ]);
  for (const file of files.filter((path) => path.startsWith('templates/') || path.startsWith('shared/'))) {
    t.is(await readFile(join(dir, file), 'utf8'), await readFile(join(REPO, file), 'utf8'), `${file} is the package's own`);
    t.is((await stat(join(dir, file))).mode, (await stat(join(REPO, file))).mode, `${file} keeps its mode`);
  }
  for (const file of files) t.true(first.stdout.includes(`created ${file}\n`), `says it created ${file}`);
  t.deepEqual(JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')), { name: dir.split('/').at(-1)!.toLowerCase(), private: true, type: 'module' });
  t.is(await readFile(join(dir, '.gitignore'), 'utf8'), `${IGNORED.join('\n')}\n`);

  const dry = await pipeline(dir, '--dry-run', '--offline', '--json');
  t.is(dry.code, 0, dry.stderr);
  t.deepEqual(dry.json?.stale, ['bookworm:download', 'debian-12:build', 'debian-12:checksum', 'trixie:download', 'debian-13:build', 'debian-13:checksum']);
  t.notRegex(dry.stderr, /remote cache/, 'a config that names no release says nothing of one');

  const before = await snapshot(dir);
  const second = await pipeline(dir, 'init');
  t.is(second.code, 0, second.stderr);
  t.deepEqual(await snapshot(dir), before, 'not a byte, mode or modification time changed');
  t.notRegex(second.stdout, /^created/m);
  t.regex(second.stdout, /^nothing to do: every file was already there$/m);
  for (const file of files.filter((path) => path !== 'package.json' && path !== '.gitignore')) {
    t.true(second.stdout.includes(`kept ${file} (already there)\n`), `names ${file} as kept`);
  }
});

test('init keeps what is there, adds only the missing .gitignore entries and "type", and names each file it kept', async (t) => {
  const dir = await emptyRepository(t);
  await writeFile(join(dir, 'package.json'), '{\n    "name": "images",\n    "version": "1.0.0",\n    "devDependencies": { "typescript": "5.9.3" }\n}\n');
  await writeFile(join(dir, '.gitignore'), 'node_modules\n/cache\nlogs/');
  await mkdir(join(dir, 'templates', 'pve-9'), { recursive: true });
  await writeFile(join(dir, 'templates', 'pve-9', 'cleanup.sh'), '#!/bin/sh\n# mine\n');
  const run = await pipeline(dir, 'init', 'pve-9');
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /^kept templates\/pve-9\/cleanup\.sh \(already there\)$/m);
  t.is(await readFile(join(dir, 'templates', 'pve-9', 'cleanup.sh'), 'utf8'), '#!/bin/sh\n# mine\n');
  t.is(
    await readFile(join(dir, 'templates', 'pve-9', 'template.pkr.hcl'), 'utf8'),
    await readFile(join(REPO, 'templates', 'pve-9', 'template.pkr.hcl'), 'utf8'),
  );
  t.is(await readFile(join(dir, '.gitignore'), 'utf8'), 'node_modules\n/cache\nlogs/\nimages/\n.pipeline/\n', 'only what was missing, on a line of its own');
  t.regex(run.stdout, /^added images\/, \.pipeline\/ to \.gitignore$/m);
  t.is(
    await readFile(join(dir, 'package.json'), 'utf8'),
    '{\n    "name": "images",\n    "version": "1.0.0",\n    "type": "module",\n    "devDependencies": {\n        "typescript": "5.9.3"\n    }\n}\n',
  );
  const config = await readFile(join(dir, 'pipeline.config.ts'), 'utf8');
  t.regex(config, /'pve-9': \{\n\s+base: 'trixie',\n\s+description: 'Proxmox VE 9 on Debian 13',\n\s+caveat: /);
  t.notRegex(config, /bookworm|debian-12/, 'only the base pve-9 needs');
  t.regex(run.stdout, /^ {2}npx tsc /m, 'typescript is a devDependency already: no install in the next steps');
  t.false(
    Object.keys(await snapshot(dir)).some((path) => path.startsWith('templates/debian-')),
    'only the image asked for',
  );

  // A config there already is kept as it is; the new image's files are laid out beside it.
  const again = await pipeline(dir, 'init', 'debian-12');
  t.is(again.code, 0, again.stderr);
  t.is(await readFile(join(dir, 'pipeline.config.ts'), 'utf8'), config);
  t.regex(again.stdout, /^kept pipeline\.config\.ts \(already there\)$/m);
  t.regex(again.stdout, /^created templates\/debian-12\/template\.pkr\.hcl$/m);
  t.regex(again.stdout, /^note: pipeline\.config\.ts was kept as it was: declare debian-12 under its images if it does not yet$/m);
});

test('in a package that says it is CommonJS, init keeps that and writes the config as pipeline.config.mts', async (t) => {
  const dir = await emptyRepository(t);
  await writeFile(join(dir, 'package.json'), '{ "name": "images", "type": "commonjs" }\n');
  const run = await pipeline(dir, 'init');
  t.is(run.code, 0, run.stderr);
  t.is(await readFile(join(dir, 'package.json'), 'utf8'), '{ "name": "images", "type": "commonjs" }\n');
  t.regex(run.stdout, /^kept package\.json's "type": "commonjs" \(the config is written as an \.mts\)$/m);
  t.deepEqual(JSON.parse(await readFile(join(dir, 'tsconfig.json'), 'utf8')).include, ['pipeline.config.mts']);
  const graph = await pipeline(dir, 'graph');
  t.is(graph.code, 0, graph.stderr);
  t.regex(graph.stdout, /\["debian-13:publish"\]/);
});

test('init with an image that has no example is one line, exit 2, and writes nothing', async (t) => {
  const dir = await emptyRepository(t);
  const run = await pipeline(dir, 'init', 'debian-12', 'debain-13');
  t.is(run.code, 2);
  t.is(run.stdout, '');
  t.is(run.stderr.trimEnd().split('\n').length, 1, run.stderr);
  t.regex(run.stderr, /^pipeline: init: no example template named "debain-13" \(did you mean debian-13\?\); the examples are debian-12, debian-13, pve-9\. /);
  t.deepEqual(await readdir(dir), ['node_modules']);
  const flag = await pipeline(dir, 'init', '--forse');
  t.is(flag.code, 2);
  t.regex(flag.stderr.trimEnd(), /^pipeline: unknown flag --forse; see pipeline init --help$/);
});

test('without a config, the CLI says how to start one', async (t) => {
  const dir = await emptyRepository(t);
  const run = await pipeline(dir, 'all');
  t.is(run.code, 2);
  t.regex(
    run.stderr.trimEnd(),
    /^pipeline: no pipeline\.config\.ts in \S+; run from the project root or pass --config FILE, or start one here: pipeline init$/,
  );
  const help = await pipeline(dir, '--help');
  t.regex(help.stdout, /^ {7}pipeline init \[images…\]$/m);
});

test("init's examples are this repository's templates and its own config's images", async (t) => {
  t.deepEqual(
    Object.keys(EXAMPLES).sort(),
    (await readdir(join(REPO, 'templates'))).sort(),
    'every template directory has an example, and each example a template',
  );
  for (const [name, example] of Object.entries(EXAMPLES)) {
    const template = join('templates', name, 'template.pkr.hcl');
    const link = await readlink(join(REPO, template)).catch(() => undefined);
    t.is(link, example.sharedTemplate && join('..', '..', example.sharedTemplate), `${template} links where init links it`);
  }
  const dir = await emptyRepository(t);
  t.is((await pipeline(dir, 'init', ...Object.keys(EXAMPLES))).code, 0);
  // The same targets, with the same descriptions, as the repository's pipeline.config.ts.
  const targets = (help: CliResult): string => help.stdout.slice(help.stdout.indexOf('\n', help.stdout.indexOf('targets (')));
  const [mine, ours] = [await pipeline(dir, '--help'), await pipeline(REPO, '--help')];
  t.is(mine.code, 0, mine.stderr);
  t.is(targets(mine), targets(ours));
  const caveat = (explain: CliResult): string | undefined => explain.stdout.split('\n').find((line) => line.startsWith('  caveat:'));
  const [myCaveat, ourCaveat] = [await pipeline(dir, 'explain', 'pve-9:build', '--offline'), await pipeline(REPO, 'explain', 'pve-9:build', '--offline')];
  t.not(caveat(myCaveat), undefined, myCaveat.stderr);
  t.is(caveat(myCaveat), caveat(ourCaveat));
});
