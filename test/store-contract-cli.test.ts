// The store contract through the CLI, against every backend (test/support/store-contract.ts):
// one tree built once uploads every image (`upload:latest`); then a fresh host without
// packer publishes them all from the store (the remote cache: no build, no base image),
// `images download all` fetches them verified, and `release check` finds them current.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { CliResult } from './support/engine-project.ts';
import { IMAGES } from './support/image-project.ts';
import { Trees, type Tree } from './support/runner-trees.ts';
import { CONTRACT_BACKENDS, type ContractBackend } from './support/store-contract.ts';

const RELEASE_PLACEHOLDER = "release: { tag: 'latest' },";
const trees = new Trees();
const cleanups: Array<() => Promise<unknown>> = [];
test.after.always(async () => {
  await trees.cleanup();
  await Promise.all(cleanups.map((cleanup) => cleanup()));
});

let built: Promise<{ origin: Tree; noPackerPath: string }> | undefined;
/** One tree with every image built (real packer, real qemu-img), shared by the backends' tests; and a PATH without packer. */
function origin() {
  built ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pipeline-nopacker-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    for (const name of await readdir('/usr/bin')) if (name !== 'packer') await symlink(join('/usr/bin', name), join(dir, name));
    return { origin: await trees.built(RELEASE_PLACEHOLDER), noPackerPath: dir };
  })();
  return built;
}

/** A copy of the origin whose config names `release`; `fresh`: with nothing built, downloaded or recorded. */
async function copyFor(source: Tree, release: object, label: string, fresh: boolean): Promise<Tree> {
  const tree = await trees.copy(source, label);
  const config = await readFile(tree.path('pipeline.config.ts'), 'utf8');
  await writeFile(
    tree.path('pipeline.config.ts'),
    config.replace(RELEASE_PLACEHOLDER, `release: ${JSON.stringify({ ...release, tag: 'latest' })},`).replaceAll(source.root, tree.root),
  );
  if (fresh) {
    for (const dir of ['cache', 'images', '.pipeline', 'logs']) await rm(tree.path(dir), { recursive: true, force: true });
    for (const file of await readdir(tree.path('publish'))) if (file.endsWith('.img')) await rm(tree.path(`publish/${file}`));
  }
  return tree;
}

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');
const explain = (result: CliResult): string => `exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`;

function contractFor(backend: ContractBackend): void {
  test(`${backend.name}: upload:latest, then a fresh host publishes every image from the store without building, downloads them verified, and finds them current`, async (t) => {
    t.timeout(10 * 60_000);
    const { origin: source, noPackerPath } = await origin();
    const running = await backend.start({ maxPieceSize: 200 * 1024, partSize: 150 * 1024 });
    t.teardown(() => running.close());
    const env = { ...running.env };

    const writer = await copyFor(source, running.release, `${backend.name}-writer`, false);
    const upload = await writer.run(['upload:latest', '--json'], { env, timeoutMs: 300_000 });
    t.is(upload.code, 0, explain(upload));

    const host = await copyFor(source, running.release, `${backend.name}-host`, true);
    const published = await host.run(['publish', '--json'], { env: { ...env, PATH: noPackerPath }, timeoutMs: 300_000 });
    t.is(published.code, 0, explain(published));
    t.false(existsSync(host.path('cache')), 'no base image was downloaded');
    for (const name of IMAGES) {
      t.is(sha256(await readFile(host.path(`publish/${name}.img`))), sha256(await readFile(source.path(`images/${name}/${name}.qcow2`))), `${name}.img`);
    }

    const dir = host.path('downloads');
    const downloaded = await host.run(['images', 'download', 'all', '--dir', dir], { env, timeoutMs: 300_000 });
    t.is(downloaded.code, 0, explain(downloaded));
    for (const name of IMAGES) {
      t.is(sha256(await readFile(join(dir, `${name}.qcow2`))), sha256(await readFile(source.path(`images/${name}/${name}.qcow2`))), `${name}.qcow2`);
    }

    const check = await host.run(['release', 'check'], { env, timeoutMs: 120_000 });
    t.is(check.code, 0, explain(check));
    for (const name of IMAGES) t.regex(check.stdout, new RegExp(`^${name}: current`, 'm'));
  });
}

for (const backend of CONTRACT_BACKENDS) contractFor(backend);
