// A put stopped at any request (the client gone there, the request never answered) leaves
// the tag naming the previous image whole, or the new one whole, never a part of either;
// the next put finishes the replacement. Every request position of a replacing put is tried
// (every third in npm test; all with OCI_KILL_SWEEP=full, `npm run test:oci-long`).
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { getImage } from '../tasks/store/get-image.ts';
import { openOciStore } from '../tasks/store/oci/index.ts';
import type { ImageToPut } from '../tasks/store/store.ts';
import { startRegistry } from './support/registry.ts';
import { RegistryProxy } from './support/registry-proxy.ts';

test('a put killed at each of its requests leaves the previous image or the new one, whole; the next put completes it', async (t) => {
  const registry = await startRegistry({ auth: 'htpasswd' });
  const proxy = await RegistryProxy.start(registry.url);
  const dir = await mkdtemp(join(tmpdir(), 'oci-kill-'));
  t.teardown(async () => {
    await proxy.close();
    await registry.close();
    await rm(dir, { recursive: true, force: true });
  });
  await writeFile(
    join(dir, 'auth.json'),
    JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from(`${registry.user}:${registry.password}`).toString('base64') } } }),
  );
  const env = { REGISTRY_AUTH_FILE: join(dir, 'auth.json'), HOME: dir };
  // Small layers: the new image is three blobs, so kills land between and inside blob uploads.
  const store = () =>
    openOciStore({ registry: `${proxy.host}/acme/images`, plainHttp: true, maxBlobSize: 40_000 }, 'latest', { env, retryBaseMs: 1, attempts: 1 });
  let serial = 0;
  const image = async (bytes: Buffer): Promise<ImageToPut> => {
    const path = join(dir, `image-${serial++}.qcow2`);
    await writeFile(path, bytes);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    return { name: 'debian-12', path, size: bytes.length, sha256, cacheKey: sha256, versions: {}, sources: { base: { path: 'cache/b' }, files: {} } };
  };
  const readBack = async (): Promise<string> => {
    const path = join(dir, `read-${serial++}.qcow2`);
    const got = await getImage(store(), 'debian-12', { path, overwrite: false, signal: new AbortController().signal, replacingWaitsMs: [] });
    const bytes = await readFile(path);
    await rm(path);
    return createHash('sha256').update(bytes).digest('hex') === got.sha256 ? got.sha256 : 'mismatch';
  };
  const quiet = { force: false, log: () => {} };

  const previous = await image(randomBytes(100_000));
  await store().put(previous, { ...quiet, signal: new AbortController().signal });
  let positions = 0;
  const outcomes = { previous: 0, next: 0 };
  // Every position in the long run (OCI_KILL_SWEEP=full); every third in npm test.
  const step = process.env.OCI_KILL_SWEEP === 'full' ? 1 : 3;
  for (let kill = 0; kill < Number.POSITIVE_INFINITY; kill += step) {
    const next = await image(randomBytes(100_000));
    const stop = new AbortController();
    const start = proxy.requests.length;
    proxy.hook = () => {
      if (proxy.requests.length - start - 1 !== kill) return 'forward';
      stop.abort();
      return 'drop';
    };
    const finished = await store()
      .put(next, { ...quiet, signal: stop.signal })
      .then(
        () => true,
        () => false,
      );
    proxy.hook = undefined;
    if (finished) {
      positions = kill; // every position of a whole put has been tried
      t.is(await readBack(), next.sha256);
      break;
    }
    const seen = await readBack();
    t.true(seen === previous.sha256 || seen === next.sha256, `killed at request ${kill}: the tag names ${seen}`);
    outcomes[seen === previous.sha256 ? 'previous' : 'next']++;
    // The next put finishes the replacement.
    await store().put(next, { ...quiet, signal: new AbortController().signal });
    t.is(await readBack(), next.sha256);
    // Back to the previous image for the next position.
    await store().put(previous, { ...quiet, signal: new AbortController().signal });
  }
  t.true(positions > 10, `a replacing put makes ${positions} requests`);
  t.true(outcomes.previous > 0 && outcomes.next > 0);
  t.log(
    `requests in a replacing put: ${positions}, killed at every ${step === 1 ? '' : 'third '}one; previous image left at ${outcomes.previous}, new image at ${outcomes.next}`,
  );
});
