// The store contract with real separate processes, against every backend
// (test/support/store-contract.ts):
// - writers of different versions of one image and of another image, each its own process,
//   started at random offsets, all succeed and leave the store consistent: each image one
//   whole version, read back verified, with that version's own attachments;
// - a put killed (SIGKILL) at a random request (or, where the backend has no requests to
//   see, at a random moment) leaves the previous image readable, verified, and the next
//   put from another process finishes or undoes what the killed one left.
//
// CONTRACT_ROUNDS (default 2) writer rounds and CONTRACT_KILLS (default 3) kills per
// backend; CONTRACT_SEED replays a run (its seed is printed). `npm run test:contract-long`
// runs 20 of each.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import test, { type ExecutionContext } from 'ava';
import { storeSettings } from '../tasks/store/backends.ts';
import { getImage } from '../tasks/store/get-image.ts';
import { openImageStore } from '../tasks/store/open.ts';
import type { ImageStore } from '../tasks/store/store.ts';
import type { ImageVersion } from './support/release-state.ts';
import { seededRandom } from './support/seeded-random.ts';
import { neverAborted } from './support/signals.ts';
import { CONTRACT_BACKENDS, type ContractBackend, type ContractStore } from './support/store-contract.ts';
import type { WriterSpec } from './support/store-writer.ts';

const ROUNDS = Number(process.env.CONTRACT_ROUNDS ?? 2);
const KILLS = Number(process.env.CONTRACT_KILLS ?? 3);
const SEED = process.env.CONTRACT_SEED ? Number(process.env.CONTRACT_SEED) : Math.floor(Math.random() * 2 ** 31);
const TAG = 'latest';
const LIMITS = { maxPieceSize: 6000, partSize: 4000 };
const WRITER = fileURLToPath(new URL('./support/store-writer.ts', import.meta.url));

let work: string | undefined;
test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'pipeline-contract-'));
});
test.after.always(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

interface Version extends ImageVersion {
  readonly image: WriterSpec['image'];
}

/** A version of `name`: random bytes of `size`, and a provenance attachment naming its own digest. */
async function version(name: string, size: number): Promise<Version> {
  const bytes = randomBytes(size);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const path = join(work!, `${name}-${sha256.slice(0, 12)}.qcow2`);
  await writeFile(path, bytes);
  return {
    name,
    bytes,
    sha256,
    image: {
      name,
      path,
      size,
      sha256,
      cacheKey: `key-${sha256.slice(0, 16)}`,
      versions: { DEBIAN_VERSION: '12.13' },
      sources: { base: { path: 'cache/base.qcow2' }, files: {} },
      attachments: { provenance: Buffer.from(`statement for ${sha256}`).toString('base64') },
    },
  };
}

interface Writer {
  readonly started: Promise<void>;
  readonly done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  kill(): void;
}

async function startWriter(store: ContractStore, image: Version, label: string): Promise<Writer> {
  const specPath = join(work!, `${label}-${randomBytes(4).toString('hex')}.json`);
  const spec: WriterSpec = { release: store.release, tag: TAG, env: store.env, image: image.image };
  await writeFile(specPath, JSON.stringify(spec));
  const child = spawn(process.execPath, ['--import=tsx', WRITER, specPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  let started!: () => void;
  const startedPromise = new Promise<void>((resolve) => (started = resolve));
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    if (text.includes('putting')) started();
  });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => {
      started();
      resolve({ code, signal, stderr });
    }),
  );
  return { started: startedPromise, done, kill: () => child.kill('SIGKILL') };
}

function storeFor(running: ContractStore): Promise<ImageStore> {
  return openImageStore(storeSettings(running.release, TAG), TAG, running.options);
}

/** Reads `name` through the store as a host would: verified, with its provenance; returns which version it was. */
async function readBack(t: ExecutionContext, running: ContractStore, name: string, candidates: readonly Version[], label: string): Promise<Version> {
  const store = await storeFor(running);
  const opened = await store.open(name, neverAborted());
  if (opened.status !== 'ready') throw new Error(`${label}: ${name} is ${opened.status} (${opened.detail})`);
  const got = await getImage(store, name, {
    path: join(work!, `read-${randomBytes(4).toString('hex')}`, `${name}.qcow2`),
    overwrite: false,
    signal: neverAborted(),
  });
  const bytes = await readFile(got.path);
  await rm(join(got.path, '..'), { recursive: true, force: true });
  const match = candidates.find((candidate) => candidate.sha256 === got.sha256);
  if (!match) throw new Error(`${label}: ${name} reads as none of its versions`);
  t.true(bytes.equals(match.bytes), `${label}: ${name}'s bytes are its version's`);
  const provenance = await opened.readAttachment('provenance', neverAborted());
  t.is(Buffer.from(provenance ?? []).toString(), `statement for ${match.sha256}`, `${label}: ${name} carries its own version's attachment`);
  return match;
}

function contractFor(backend: ContractBackend): void {
  test.serial(`${backend.name}: writers in separate processes at random offsets converge, each image one whole version with its own attachments`, async (t) => {
    t.timeout(15 * 60_000);
    const random = seededRandom(SEED);
    t.log(`seed ${SEED} (replay: CONTRACT_SEED=${SEED} CONTRACT_ROUNDS=${ROUNDS})`);
    for (let round = 1; round <= ROUNDS; round++) {
      const running = await backend.start(LIMITS);
      try {
        // Two layouts of one image (whole, and in parts) and a second image.
        const debian = [await version('debian-12', 5000), await version('debian-12', 9000)];
        const pve = [await version('pve-9', 3000)];
        const jobs = [debian[0]!, debian[1]!, debian[0]!, pve[0]!];
        const offsets = jobs.map(() => Math.floor(random() * 200));
        const label = `round ${round} of ${ROUNDS} (offsets ${offsets.join('/')} ms)`;
        const results = await Promise.all(
          jobs.map(async (job, index) => {
            await sleep(offsets[index]!);
            return (await startWriter(running, job, `writer-${index}`)).done;
          }),
        );
        for (const [index, result] of results.entries()) t.is(result.code, 0, `${label}: writer ${index} exited ${result.code}: ${result.stderr}`);
        const versions = new Map<string, Version[]>([
          ['debian-12', debian],
          ['pve-9', pve],
        ]);
        t.deepEqual(await running.problems(TAG, versions), [], label);
        await readBack(t, running, 'debian-12', debian, label);
        await readBack(t, running, 'pve-9', pve, label);
        const listed = await (await storeFor(running)).list(neverAborted());
        t.deepEqual(
          listed.images.map((image) => [image.name, image.state]),
          [
            ['debian-12', 'complete'],
            ['pve-9', 'complete'],
          ],
          label,
        );
      } finally {
        await running.close();
      }
    }
  });

  test.serial(`${backend.name}: a put killed at a random point leaves the previous image readable, and the next put finishes or undoes it`, async (t) => {
    t.timeout(15 * 60_000);
    const random = seededRandom(SEED + 1);
    t.log(`seed ${SEED} (replay: CONTRACT_SEED=${SEED} CONTRACT_KILLS=${KILLS})`);
    const old = await version('debian-12', 5000);
    const next = await version('debian-12', 9000);
    /** A store holding `old`, written by a process of its own. */
    const storeWithOld = async () => {
      const running = await backend.start(LIMITS);
      const first = await (await startWriter(running, old, 'old')).done;
      if (first.code !== 0) throw new Error(`putting the old version failed: ${first.stderr}`);
      return running;
    };
    // One uninterrupted replacement: how many mutating requests it makes, or how long it takes.
    const reference = await storeWithOld();
    let mutations = 0;
    const watching = reference.watchMutations?.((index) => (mutations = index + 1));
    const writer = await startWriter(reference, next, 'reference');
    await writer.started;
    const began = performance.now();
    const finished = await writer.done;
    const putMs = performance.now() - began;
    watching?.stop();
    await reference.close();
    t.is(finished.code, 0, finished.stderr);

    for (let trial = 1; trial <= KILLS; trial++) {
      const running = await storeWithOld();
      try {
        const killer = await startWriter(running, next, `killed-${trial}`);
        let label: string;
        if (running.watchMutations && mutations > 0) {
          const position = Math.floor(random() * mutations);
          label = `kill ${trial} of ${KILLS}, at mutating request ${position + 1} of ${mutations}`;
          const watch = running.watchMutations((index) => {
            if (index === position) killer.kill();
          });
          await killer.done;
          watch.stop();
        } else {
          const at = random() * putMs;
          label = `kill ${trial} of ${KILLS}, ${Math.round(at)} ms into a ${Math.round(putMs)} ms put`;
          await killer.started;
          await sleep(at);
          killer.kill();
          await killer.done;
        }
        // Right after the kill: the old image, or the new one if the put got far enough, whole and verified.
        await readBack(t, running, 'debian-12', [old, next], `${label}, right after`);
        const rerun = await (await startWriter(running, next, `rerun-${trial}`)).done;
        t.is(rerun.code, 0, `${label}: the next put failed: ${rerun.stderr}`);
        t.deepEqual(await running.problems(TAG, new Map([['debian-12', [next]]])), [], label);
        t.is((await readBack(t, running, 'debian-12', [next], `${label}, after the next put`)).sha256, next.sha256);
      } finally {
        await running.close();
      }
    }
  });
}

for (const backend of CONTRACT_BACKENDS) contractFor(backend);
