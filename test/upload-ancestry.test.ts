// The guard on `latest` behind the workflows: an upload never replaces an image whose
// recorded commit is not an ancestor of its own, unless forced. Real git histories (a line
// of commits, a diverged branch, a clone that lacks a commit), on every backend through the
// one hook they call (PutOptions.mayReplace), and once through the upload node itself.
import type { ExecutionContext } from 'ava';
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ancestryGuard, readSourceCommit } from '../tasks/source-commit.ts';
import { readLocalImage } from '../tasks/store/local-image.ts';
import { openOciStore } from '../tasks/store/oci/index.ts';
import { openImageStore } from '../tasks/store/open.ts';
import type { ImageStore } from '../tasks/store/store.ts';
import { createImageFixture, GitHubServer, type ImageFixture } from './support/github-server.ts';
import { throwsFailure } from './support/failures.ts';
import { makeImageProject } from './support/image-project.ts';
import { startRegistry } from './support/registry.ts';
import { neverAborted } from './support/signals.ts';

const IMAGE = 'pve-9';

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.org', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.org' },
  }).trim();
}

/** A repository at `root` (images/ ignored unless a .gitignore is there) with `count` commits on main; their shas, oldest first. */
async function history(root: string, count: number): Promise<string[]> {
  git(root, 'init', '-q', '-b', 'main');
  await writeFile(join(root, '.gitignore'), 'images/\n', { flag: 'wx' }).catch(() => undefined);
  const shas: string[] = [];
  for (let index = 1; index <= count; index++) {
    await writeFile(join(root, 'notes.txt'), `change ${index}\n`);
    git(root, 'add', '-A');
    git(root, 'commit', '-q', '-m', `commit ${index}`);
    shas.push(git(root, 'rev-parse', 'HEAD'));
  }
  return shas;
}

interface Backend {
  readonly title: string;
  open(t: ExecutionContext): Promise<{ fixture: ImageFixture; store: ImageStore }>;
}

const BACKENDS: Backend[] = [
  {
    title: 'a GitHub release',
    async open(t) {
      const server = await GitHubServer.start();
      const fixture = await createImageFixture([{ name: IMAGE, size: 3000 }], { repo: `${server.owner}/${server.repo}`, apiUrl: server.url, tag: 'latest' });
      t.teardown(async () => {
        await server.close();
        await fixture.cleanup();
      });
      return { fixture, store: await openImageStore(fixture.catalog.release, 'latest', { env: { GITHUB_TOKEN: server.token }, tuning: { retryBaseMs: 2 } }) };
    },
  },
  {
    title: 'a shared directory',
    async open(t) {
      const shared = await mkdtemp(join(tmpdir(), 'pipeline-shared-'));
      const fixture = await createImageFixture([{ name: IMAGE, size: 3000 }], { dir: shared, tag: 'latest' });
      t.teardown(async () => {
        await rm(shared, { recursive: true, force: true });
        await fixture.cleanup();
      });
      return { fixture, store: await openImageStore(fixture.catalog.release, 'latest') };
    },
  },
  {
    title: 'an OCI registry',
    async open(t) {
      const registry = await startRegistry({ auth: 'none' });
      // The fixture's catalog is only the images' project; the store is the registry.
      const shared = await mkdtemp(join(tmpdir(), 'pipeline-shared-'));
      const fixture = await createImageFixture([{ name: IMAGE, size: 3000 }], { dir: shared, tag: 'latest' });
      t.teardown(async () => {
        await registry.close();
        await rm(shared, { recursive: true, force: true });
        await fixture.cleanup();
      });
      const env = { HOME: shared, PATH: process.env.PATH };
      return { fixture, store: openOciStore({ registry: `${registry.host}/acme/images`, plainHttp: true }, 'latest', { env, retryBaseMs: 2 }) };
    },
  },
];

for (const backend of BACKENDS) {
  test(`${backend.title}: an old commit's upload is refused, a newer one's accepted, --force overrides`, async (t) => {
    const { fixture, store } = await backend.open(t);
    const root = fixture.catalog.root;
    const [c1, c2, c3] = await history(root, 3);
    const logs: string[] = [];
    /** Puts fresh bytes for the image from the commit checked out now, as the upload node does. */
    const upload = async (options: { force?: boolean; newBytes?: boolean } = {}) => {
      if (options.newBytes !== false) await fixture.writeImage(IMAGE, 3000);
      const own = await readSourceCommit(root, neverAborted());
      const image = { ...(await readLocalImage(fixture.catalog, IMAGE)), ...(own ? { commit: own } : {}) };
      const force = options.force ?? false;
      const log = (line: string) => logs.push(line);
      await store.put(image, {
        force,
        signal: neverAborted(),
        log,
        mayReplace: ancestryGuard({ root, name: IMAGE, location: store.location, own, force, signal: neverAborted(), log }),
      });
      return image.sha256;
    };
    const held = async () => (await store.list(neverAborted())).images.find((image) => image.name === IMAGE)?.record;

    git(root, 'checkout', '-q', c2!);
    const fromC2 = await upload();
    t.deepEqual((await held())?.commit, { sha: c2, dirty: false }, 'the record names the commit and a clean tree');

    // A re-run of an older commit: refused in one line naming both commits; the store keeps c2's image.
    git(root, 'checkout', '-q', c1!);
    const refused = await throwsFailure(t, upload(), 'setup');
    t.true(refused.message.includes(c2!.slice(0, 12)) && refused.message.includes(c1!.slice(0, 12)), refused.message);
    t.regex(refused.message, /not an ancestor .*--force/);
    t.false(refused.message.includes('\n'));
    t.is((await held())?.sha256, fromC2);
    t.is((await held())?.commit?.sha, c2);

    // The same bytes from the old commit replace nothing: the record keeps the commit that built them.
    git(root, 'checkout', '-q', c2!);
    const again = await upload();
    git(root, 'checkout', '-q', c1!);
    await upload({ newBytes: false });
    t.is((await held())?.sha256, again);
    t.is((await held())?.commit?.sha, c2, 'held bytes keep the commit they were built from');

    // A descendant replaces it; an uncommitted change is recorded as dirty.
    git(root, 'checkout', '-q', c3!);
    await writeFile(join(root, 'notes.txt'), 'not committed\n');
    const fromC3 = await upload();
    t.deepEqual((await held())?.commit, { sha: c3, dirty: true });
    t.is((await held())?.sha256, fromC3);
    git(root, 'checkout', '-q', '--', 'notes.txt');

    // A diverged branch from c2 is no descendant of c3 either.
    git(root, 'checkout', '-q', '-b', 'side', c2!);
    await writeFile(join(root, 'side.txt'), 'side\n');
    git(root, 'add', '-A');
    git(root, 'commit', '-q', '-m', 'side');
    await throwsFailure(t, upload(), 'setup', /not an ancestor/);

    // --force replaces it anyway, and says so.
    git(root, 'checkout', '-q', c1!);
    const forced = await upload({ force: true });
    t.is((await held())?.sha256, forced);
    t.is((await held())?.commit?.sha, c1);
    t.true(
      logs.some((line) => line.includes(c3!.slice(0, 12)) && line.includes('--force')),
      logs.join('\n'),
    );
  });

  test(`${backend.title}: a commit the clone lacks is refused with a fetch hint; a record without a commit, or a tree outside git, as the guard says`, async (t) => {
    const { fixture, store } = await backend.open(t);
    const root = fixture.catalog.root;
    /** An upload of fresh bytes from `own`, checked in the clone at `clone`. */
    const put = async (own: Awaited<ReturnType<typeof readSourceCommit>>, clone = root) => {
      await fixture.writeImage(IMAGE, 3000);
      const image = { ...(await readLocalImage(fixture.catalog, IMAGE)), ...(own ? { commit: own } : {}) };
      const log = () => {};
      await store.put(image, {
        force: false,
        signal: neverAborted(),
        log,
        mayReplace: ancestryGuard({ root: clone, name: IMAGE, location: store.location, own, force: false, signal: neverAborted(), log }),
      });
    };
    // Outside git: no commit recorded, and a record without one is replaceable by anyone.
    t.is(await readSourceCommit(root, neverAborted()), undefined);
    await put(undefined);
    const [c1] = await history(root, 1);
    await put(await readSourceCommit(root, neverAborted()));
    // A tree outside git cannot be shown newer than a recorded commit.
    await throwsFailure(t, put(undefined), 'setup', /not a git checkout/);

    // Another clone's commit, unknown here: not an ancestor until fetched.
    const elsewhere = await mkdtemp(join(tmpdir(), 'pipeline-other-clone-'));
    t.teardown(() => rm(elsewhere, { recursive: true, force: true }));
    git(elsewhere, 'clone', '-q', root, '.');
    await writeFile(join(elsewhere, 'notes.txt'), 'elsewhere\n');
    git(elsewhere, 'commit', '-q', '-am', 'elsewhere');
    const unknown = git(elsewhere, 'rev-parse', 'HEAD');
    const record = (await store.list(neverAborted())).images[0]!.record!;
    t.is(record.commit?.sha, c1);
    // Uploaded from that clone, which has c1: accepted.
    await put(await readSourceCommit(elsewhere, neverAborted()), elsewhere);
    t.is((await store.list(neverAborted())).images[0]!.record?.commit?.sha, unknown);
    const refused = await throwsFailure(t, put(await readSourceCommit(root, neverAborted())), 'setup', /does not have .*git fetch/);
    t.true(refused.message.includes(unknown.slice(0, 12)));
    git(root, 'fetch', '-q', elsewhere, 'main');
    git(root, 'merge', '-q', '--ff-only', 'FETCH_HEAD');
    await put(await readSourceCommit(root, neverAborted()));
  });
}

test('the upload node records the commit and refuses, exit 1 in one line, an upload from an older checkout', async (t) => {
  const shared = await mkdtemp(join(tmpdir(), 'pipeline-shared-'));
  t.teardown(() => rm(shared, { recursive: true, force: true }));
  const project = await makeImageProject(t, `release: { dir: ${JSON.stringify(shared)}, tag: 'latest' },`);
  await writeFile(project.path('.gitignore'), 'images/\ncache/\nlogs/\n.pipeline/\nupstream/\npublish/\n');
  const old = (await history(project.root, 1))[0]!;
  // The newer template writes other bytes into the image.
  const template = project.path('templates/debian-12/template.pkr.hcl');
  const text = await readFile(template, 'utf8');
  t.true(text.includes('write -P 0x2a'));
  await writeFile(template, text.replace('write -P 0x2a', 'write -P 0x3b'));
  git(project.root, 'commit', '-q', '-am', 'newer template');
  const newer = git(project.root, 'rev-parse', 'HEAD');

  const uploaded = await project.run(['debian-12:upload'], { timeoutMs: 300_000 });
  t.is(uploaded.code, 0, uploaded.stderr);
  const record = JSON.parse(await readFile(join(shared, 'latest', 'debian-12.json'), 'utf8')) as { image: { commit?: unknown } };
  t.deepEqual(record.image.commit, { sha: newer, dirty: false });

  // The old commit's template: the image rebuilds, and its upload is refused.
  git(project.root, 'checkout', '-q', old);
  const refused = await project.run(['debian-12:upload'], { timeoutMs: 300_000 });
  t.is(refused.code, 1, refused.stderr);
  t.regex(refused.stderr, new RegExp(`built from commit ${newer.slice(0, 12)}, which is not an ancestor of this tree's commit ${old.slice(0, 12)}`));
  t.deepEqual((JSON.parse(await readFile(join(shared, 'latest', 'debian-12.json'), 'utf8')) as typeof record).image.commit, { sha: newer, dirty: false });

  const forced = await project.run(['debian-12:upload', '--force'], { timeoutMs: 300_000 });
  t.is(forced.code, 0, forced.stderr);
  t.is((JSON.parse(await readFile(join(shared, 'latest', 'debian-12.json'), 'utf8')) as { image: { commit: { sha: string } } }).image.commit.sha, old);
});
