// `release:` settings become a tagged union: the backend whose own keys they hold, GitHub
// releases when they hold none; the types refuse a config that names two stores.
import test from 'ava';
import { type ReleaseDecl, storeSettings } from '../tasks/store/backends.ts';
import { describeStore, storeConfigured, storeFingerprint } from '../tasks/store/open.ts';

test('settings belong to the backend whose keys they hold, GitHub releases by default', (t) => {
  t.is(storeSettings({ dir: '/srv/images' }, 'latest').backend, 'directory');
  t.is(storeSettings({ repo: 'acme/images' }, 'latest').backend, 'github');
  t.is(storeSettings(undefined, 'latest').backend, 'github');
  t.deepEqual(storeSettings({ tag: 'v1', remoteCache: false }, 'v1'), { tag: 'v1', remoteCache: false, backend: 'github' });
});

test('what the rest of the tool asks of a store goes to its backend', (t) => {
  const directory = storeSettings({ dir: '/srv/images' }, 'latest');
  t.is(describeStore(directory, 'latest'), 'store /srv/images/latest');
  t.true(storeConfigured(directory, {}));
  t.deepEqual(storeFingerprint(directory), { params: { dir: '/srv/images' }, env: [] });

  const github = storeSettings({ repo: 'acme/images' }, 'latest');
  t.is(describeStore(github, 'v2', {}), 'release v2 of acme/images');
  t.is(describeStore(github, 'v2', { GITHUB_REPOSITORY: 'other/repo' }), 'release v2 of other/repo');
  t.true(storeConfigured(github, {}));
  t.false(storeConfigured(storeSettings(undefined, 'latest'), {}), 'no repository anywhere: no store');
  t.true(storeConfigured(storeSettings(undefined, 'latest'), { GITHUB_REPOSITORY: 'acme/images' }));
  t.deepEqual(storeFingerprint(github).params, { repo: 'acme/images', apiUrl: null });
});

test("a backend's own checks run when settings are made", (t) => {
  t.throws(() => storeSettings({ repo: '../x' }, 'latest'), { message: /release\.repo.*is not a GitHub repository/ });
});

// Compile-time: the repository's typecheck fails if these stop being errors.
// @ts-expect-error a config names one store: `repo` belongs to GitHub releases, `dir` to a directory
const twoStores: ReleaseDecl = { dir: '/srv/images', repo: 'acme/images' };
void twoStores;
