// The image pipeline's config (tasks/config.ts) and catalog (tasks/image-catalog.ts) in
// process: names are checked when the config is made, and what a kind needs from another
// node (the download's verified SHA-512) and from the project (its stat cache) comes
// through the engine's ConfigContext, never from the state directory's files.
import test from 'ava';
import { createHash } from 'node:crypto';
import { StatCache } from '../../src/hasher.ts';
import { type ConfigContext, type FileHasher, isFailure, type NodeRecord } from '../../src/types.ts';
import { defineImagePipeline } from '../../tasks/config.ts';
import { createImageCatalog } from '../../tasks/image-catalog.ts';
import { UnitProject } from './support/project.ts';

const base = { url: 'http://127.0.0.1:9/base.qcow2', checksumsUrl: 'http://127.0.0.1:9/SHA512SUMS' };

test('image and base names are checked when the config is made, in one line naming the name', (t) => {
  for (const [config, message] of [
    [{ bases: { trixie: base }, images: { Debian_13: { base: 'trixie' } } }, 'image name "Debian_13" is invalid'],
    [{ bases: { '-trixie': base }, images: { 'debian-13': { base: '-trixie' } } }, 'base name "-trixie" is invalid'],
    [{ bases: { trixie: base }, images: { 'debian-13': { base: 'bookworm' } } }, 'image "debian-13" uses base "bookworm", which is not declared in bases'],
  ] as const) {
    const error = t.throws(() => defineImagePipeline(config as never));
    t.true(isFailure(error, 'config'), String(error));
    t.true(error!.message.startsWith(message), error!.message);
  }
});

test("the catalog takes the base's SHA-512 from what its download node recorded, and hashes through the project's stat cache", async (t) => {
  const files = {
    'templates/debian-13/template.pkr.hcl': 'source {}',
    'templates/debian-13/cleanup.sh': 'true',
    'shared/scripts/cleanup-common.sh': 'true',
    'shared/scripts/detect-versions.sh': 'true',
    'shared/cloud-init/user-data.pkrtpl': '#cloud-config',
    'shared/cloud-init/meta-data': '',
    'cache/base.qcow2': 'the base image',
  };
  const project = UnitProject.create(t, files);
  const statCache = await StatCache.open();
  const hashed: string[] = [];
  const hasher: FileHasher = {
    hash(path, options) {
      hashed.push(path);
      return statCache.hash(path, options);
    },
  };
  const verified = 'f'.repeat(128);
  const asked: string[] = [];
  const context: ConfigContext = {
    root: project.root,
    hasher,
    recordOf(id): NodeRecord | undefined {
      asked.push(id);
      return id === 'trixie:download' ? { probe: verified, outputs: {}, finishedAt: '' } : undefined;
    },
  };
  const catalog = createImageCatalog({
    project: context,
    names: ['debian-13'],
    publishDir: project.path('published'),
    templatesDir: 'templates',
    sharedDir: 'shared',
    base: () => ({ node: 'trixie:download', file: 'cache/base.qcow2', ...base }),
    extraFiles: () => [],
    accelerator: () => 'kvm',
    release: { backend: 'github', tag: 'latest' },
  });
  const current = await catalog.currentKey('debian-13');
  const sha256 = createHash('sha256').update(files['cache/base.qcow2']).digest('hex');
  t.deepEqual(current.sources.base, { path: 'cache/base.qcow2', sha256, sha512: verified });
  t.deepEqual(asked, ['trixie:download']);
  t.deepEqual(hashed, [project.path('cache/base.qcow2')], 'the base went through the stat cache the project gave');
});
