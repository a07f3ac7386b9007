// A seeded fetch in a process of its own, for the kill -9 test:
//   node --import=tsx test/support/delta-fetch-child.ts '{"env":…,"path":…,"seed":…[,"concurrency":4][,"rangedReadCost":0]}'
// prints "progress <done>" lines as bytes land (bench/delta.ts also runs it, for its peak RSS).
import { getImage } from '../../tasks/store/get-image.ts';
import { storeSettings } from '../../tasks/store/backends.ts';
import { openImageStore } from '../../tasks/store/open.ts';

const { env, path, seed, concurrency, rangedReadCost } = JSON.parse(process.argv[2]!) as {
  env: Record<string, string>;
  path: string;
  seed: string;
  concurrency?: number;
  rangedReadCost?: number;
};
const store = await openImageStore(storeSettings({ repo: env.GITHUB_REPOSITORY!, apiUrl: env.GITHUB_API_URL! }, 'latest'), 'latest', { env });
await getImage(store, 'img', {
  path,
  overwrite: false,
  signal: new AbortController().signal,
  concurrency: concurrency ?? 1,
  seeds: [{ path: seed, role: 'old' }],
  ...(rangedReadCost !== undefined ? { rangedReadCost } : {}),
  onProgress: (done) => process.stdout.write(`progress ${done}\n`),
});
process.stdout.write('done\n');
