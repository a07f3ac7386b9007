// The seed's release phase against a loopback GitHub: `release check` states the decision,
// `release note` (and `release check --note`) tells a tag-only versioned release where its
// images are, once however often it runs, and `images list|download --version` on such a
// release say where the images are instead of listing nothing or failing per image.
import type { ExecutionContext } from 'ava';
import test from 'ava';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exitCodeOf } from '../src/failure.ts';
import { type CommandIO, isFailure } from '../src/types.ts';
import { imagesCommand } from '../tasks/images.ts';
import { notedTag, noteLine, withNote } from '../tasks/release-note.ts';
import { releaseCommand } from '../tasks/release.ts';
import { readLocalImage } from '../tasks/store/local-image.ts';
import { openImageStore, type StoreOptions } from '../tasks/store/open.ts';
import { createImageFixture, GitHubServer } from './support/github-server.ts';
import { schemaErrors, validateOutput } from './support/output-schema.ts';
import { neverAborted } from './support/signals.ts';

const NAMES = ['debian-12', 'pve-9'];
const CURRENT = 'No template changes detected: images on `latest` are current';

interface Result {
  readonly code: number;
  readonly out: string[];
  readonly err: string[];
}

/** Two images on `latest`, and a tag-only release v0.50 with the notes a release manager wrote. */
async function setup(t: ExecutionContext) {
  const server = await GitHubServer.start();
  const fixture = await createImageFixture(
    NAMES.map((name) => ({ name, size: 2000 })),
    { repo: `${server.owner}/${server.repo}`, apiUrl: server.url, tag: 'latest' },
  );
  t.teardown(async () => {
    await server.close();
    await fixture.cleanup();
  });
  const options: StoreOptions = { env: { GITHUB_TOKEN: server.token }, tuning: { retryBaseMs: 2 } };
  const store = await openImageStore(fixture.catalog.release, 'latest', options);
  for (const name of NAMES) await store.put(await readLocalImage(fixture.catalog, name), { force: false, signal: neverAborted(), log: () => {} });
  server.createRelease('v0.50', { name: 'v0.50', body: '## Changes\n\n- Faster downloads\n' });
  const release = releaseCommand(fixture.catalog, { store: options });
  const images = imagesCommand(fixture.catalog, { store: options });
  /** Runs a command as the CLI does: a Failure becomes one line and its exit code. */
  const run = async (command: typeof release, argv: string[], values: Record<string, string | boolean> = {}, json = false): Promise<Result> => {
    const out: string[] = [];
    const err: string[] = [];
    const io: CommandIO = {
      root: fixture.root,
      signal: neverAborted(),
      json,
      out: (line) => out.push(line),
      err: (line) => err.push(line),
      progress: () => {},
      hasher: { hash: async () => ({ size: 0, xxh: '0'.repeat(16) }) },
    };
    const code = await command.run({ values, positionals: argv }, io).catch((error: unknown) => {
      if (!isFailure(error)) throw error;
      err.push(`pipeline: ${error.message}`);
      return exitCodeOf(error);
    });
    return { code, out, err };
  };
  const body = () => server.release('v0.50')?.body ?? '';
  const bodyUpdates = () => server.events.filter((event) => event.kind === 'update-release').length;
  return { server, fixture, release, images, run, body, bodyUpdates };
}

test('the note line: linked or plain, found again whichever it is, added after what is there', (t) => {
  t.is(noteLine('latest'), 'Images: See `latest` release');
  t.is(
    noteLine('latest', 'https://github.example/acme/images/releases/tag/latest'),
    'Images: See [`latest` release](https://github.example/acme/images/releases/tag/latest)',
  );
  t.is(notedTag('notes\n\nImages: See `latest` release\n'), 'latest');
  t.is(notedTag(`x\n${noteLine('stable', 'https://x/y')}`), 'stable');
  t.is(notedTag('The images: See `latest` release'), undefined, 'only a line of its own');
  t.is(withNote('', 'L'), 'L\n');
  t.is(withNote('## Changes\n\n- a\n\n\n', 'L'), '## Changes\n\n- a\n\nL\n');
});

test('release check ends with the decision; --json carries it', async (t) => {
  const { fixture, release, run } = await setup(t);
  const current = await run(release, ['check']);
  t.is(current.code, 0);
  t.is(current.out.at(-1), CURRENT);
  const one = await run(release, ['check', 'pve-9']);
  t.deepEqual(one.out, ['pve-9: current', 'No template changes detected: pve-9 on `latest` is current']);

  fixture.sources.get('pve-9')!.files['templates/pve-9/cleanup.sh'] = 'c'.repeat(64);
  const stale = await run(release, ['check']);
  t.is(stale.code, 1);
  t.is(stale.out.at(-1), 'Rebuild needed: pve-9 (template file templates/pve-9/cleanup.sh added)');
  const json = await run(release, ['check'], {}, true);
  const parsed = JSON.parse(json.out[0]!) as { decision: string; images: Array<{ name: string; base?: { path: string } }> };
  t.true(validateOutput(parsed), schemaErrors(parsed));
  t.is(parsed.decision, stale.out.at(-1) ?? '');
  t.deepEqual(
    parsed.images.map((image) => image.base?.path),
    NAMES.map((name) => `cache/${name}-base.qcow2`),
    'each verdict names the base it would build from',
  );
  t.is((await run(release, ['check', 'pve-10'])).code, 2, 'an image the config does not have');
});

test('release check --max-age: an image uploaded longer ago is due for a rebuild', async (t) => {
  const { release, run } = await setup(t);
  t.is((await run(release, ['check'], { 'max-age': '6' })).code, 0, 'just uploaded');
  const due = await run(release, ['check'], { 'max-age': '0' });
  t.is(due.code, 1);
  t.regex(due.out.at(-1)!, /^Rebuild needed: debian-12 \(uploaded 0 days ago \(.+\), more than --max-age 0\), pve-9 \(uploaded 0 days ago/);
  const bad = await run(release, ['check'], { 'max-age': 'weekly' });
  t.is(bad.code, 2);
  t.deepEqual(bad.err, ['pipeline: --max-age takes a number of days (6, or 6d), not "weekly"']);
});

test('release note: a tag-only release gets the note once, after what is there, however often it runs', async (t) => {
  const { server, release, run, body, bodyUpdates } = await setup(t);
  const line = noteLine('latest', server.release('latest')!.html_url);
  const first = await run(release, ['note', 'v0.50']);
  t.is(first.code, 0, first.err.join('\n'));
  t.deepEqual(first.out, [`added to release v0.50's description: ${line}`]);
  t.is(body(), `## Changes\n\n- Faster downloads\n\n${line}\n`);
  for (let again = 0; again < 3; again++) {
    const repeat = await run(release, ['note', 'v0.50']);
    t.is(repeat.code, 0);
    t.deepEqual(repeat.out, [`release v0.50's description already says: ${line}`]);
  }
  t.is(body().split(line).length, 2, 'the line once');
  t.is(bodyUpdates(), 1, 'written once');
  const json = await run(release, ['note', 'v0.50'], {}, true);
  const noted = JSON.parse(json.out[0]!);
  t.true(validateOutput(noted), schemaErrors(noted));
  t.deepEqual(noted, { formatVersion: 1, command: 'release-note', ok: true, tag: 'latest', version: 'v0.50', line, changed: false, dryRun: false });
});

test('release note --dry-run writes nothing; --tag points elsewhere; a missing version is one line, exit 2', async (t) => {
  const { server, release, run, body, bodyUpdates } = await setup(t);
  const dry = await run(release, ['note', 'v0.50'], { 'dry-run': true });
  t.is(dry.code, 0);
  t.deepEqual(dry.out, [`would add to release v0.50's description: ${noteLine('latest', server.release('latest')!.html_url)}`]);
  t.is(body(), '## Changes\n\n- Faster downloads\n');
  t.is(bodyUpdates(), 0);

  // A location with no release yet: the note names it without a link.
  const stable = await run(release, ['note', 'v0.50'], { tag: 'stable' });
  t.deepEqual(stable.out, ["added to release v0.50's description: Images: See `stable` release"]);
  const other = await run(release, ['note', 'v0.50']);
  t.is(other.code, 2);
  t.deepEqual(other.err, [
    "pipeline: release v0.50's description already says its images are on release stable, not latest: edit that line by hand to change it",
  ]);

  const missing = await run(release, ['note', 'v9.99']);
  t.is(missing.code, 2);
  t.is(missing.err.length, 1);
  t.regex(missing.err[0]!, /^pipeline: release v9\.99 not found in acme\/images/);
  for (const [argv, message] of [
    [['note'], /usage: release note <version>/],
    [['note', 'latest'], /latest is the release the note points at/],
    [['note', 'v 1'], /release note <version>/],
  ] as const) {
    const result = await run(release, [...argv]);
    t.is(result.code, 2, argv.join(' '));
    t.regex(result.err[0] ?? '', message);
  }
});

test('release check --note notes a release when every image is current, and on a stale one writes nothing and exits 1', async (t) => {
  const { fixture, release, run, body, bodyUpdates } = await setup(t);
  fixture.sources.get('debian-12')!.base.sha256 = 'e'.repeat(64);
  const stale = await run(release, ['check'], { note: 'v0.50' });
  t.is(stale.code, 1);
  t.deepEqual(stale.out.slice(-2), [
    'Rebuild needed: debian-12 (upstream base image changed (cache/debian-12-base.qcow2))',
    'release v0.50 not noted: its images are not the ones on `latest` until they are rebuilt',
  ]);
  t.is(bodyUpdates(), 0);
  t.is(body(), '## Changes\n\n- Faster downloads\n');
  const staleJson = JSON.parse((await run(release, ['check'], { note: 'v0.50' }, true)).out[0]!) as { ok: boolean; note?: unknown };
  t.like(staleJson, { ok: false });
  t.is(staleJson.note, undefined);

  fixture.sources.get('debian-12')!.base.sha256 = (await import('node:crypto')).createHash('sha256').update('base debian-12').digest('hex');
  const dry = await run(release, ['check'], { note: 'v0.50', 'dry-run': true }, true);
  const dryJson = JSON.parse(dry.out[0]!) as { note: { changed: boolean; dryRun: boolean } };
  t.true(validateOutput(dryJson), schemaErrors(dryJson));
  t.like(dryJson.note, { changed: true, dryRun: true });
  t.is(bodyUpdates(), 0);
  const current = await run(release, ['check'], { note: 'v0.50' });
  t.is(current.code, 0);
  t.is(current.out.at(-2), CURRENT);
  t.regex(current.out.at(-1)!, /^added to release v0\.50's description: Images: See \[`latest` release\]/);
  t.is(bodyUpdates(), 1);
  t.is((await run(release, ['check'], { note: 'v0.50' })).code, 0);
  t.is(bodyUpdates(), 1, 'a second run changes nothing');
});

test('images list --version on a tag-only release says where the images are (exit 0); download says so and exits 2, fetching nothing', async (t) => {
  const { images, release, run, fixture } = await setup(t);
  const before = await run(images, ['list'], { version: 'v0.50' });
  t.is(before.code, 0);
  t.deepEqual(before.out, ['release v0.50 of acme/images holds no images; this config keeps them on latest: pipeline images list --version latest']);
  await run(release, ['note', 'v0.50'], { tag: 'stable' });
  const noted = await run(images, ['list'], { version: 'v0.50' });
  t.deepEqual(noted.out, [
    'release v0.50 of acme/images holds no images; its description says they are on release stable: pipeline images list --version stable',
  ]);
  const json = await run(images, ['list'], { version: 'v0.50' }, true);
  const listed = JSON.parse(json.out[0]!);
  t.true(validateOutput(listed), schemaErrors(listed));
  t.deepEqual(listed, { formatVersion: 1, command: 'images-list', ok: true, tag: 'v0.50', images: [], imagesAt: { tag: 'stable', from: 'description' } });

  const dir = await mkdtemp(join(tmpdir(), 'pipeline-download-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const names of [['pve-9'], ['all']]) {
    const download = await run(images, ['download', ...names], { version: 'v0.50', dir });
    t.is(download.code, 2, names.join(' '));
    t.deepEqual(download.err, [
      `pipeline: release v0.50 of acme/images holds no images; its description says they are on release stable: pipeline images download ${names.join(' ')} --version stable`,
    ]);
  }
  t.deepEqual(await readdir(dir), [], 'never follows the note silently');
  // The images are where the config keeps them.
  t.is((await run(images, ['list'])).out.length, fixture.catalog.names.length);
});

test('a store without release descriptions: release note and release check --note do not apply, exit 2', async (t) => {
  const shared = await mkdtemp(join(tmpdir(), 'pipeline-shared-'));
  const fixture = await createImageFixture([{ name: 'debian-12', size: 1000 }], { dir: shared, tag: 'latest' });
  t.teardown(async () => {
    await rm(shared, { recursive: true, force: true });
    await fixture.cleanup();
  });
  const release = releaseCommand(fixture.catalog);
  for (const [argv, values] of [
    [['note', 'v0.50'], {}],
    [['check'], { note: 'v0.50' }],
  ] as const) {
    const error = await release
      .run(
        { values: { ...values }, positionals: [...argv] },
        {
          root: fixture.root,
          signal: neverAborted(),
          json: false,
          out: () => {},
          err: () => {},
          progress: () => {},
          hasher: { hash: async () => ({ size: 0, xxh: '' }) },
        },
      )
      .catch((caught: unknown) => caught);
    t.true(isFailure(error), String(error));
    if (!isFailure(error)) continue;
    t.is(exitCodeOf(error), 2);
    t.regex(error.message, new RegExp(`store ${shared}/latest keeps no release descriptions, so the note does not apply`));
  }
});
