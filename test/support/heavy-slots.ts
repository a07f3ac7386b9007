// A cross-process semaphore for heavy tests. ava runs each test file in its own process
// and every test of a file at once, so a suite of CLI runs (each a node process, with
// packer and qemu-img under it) would start dozens of processes on a 2-core machine and
// time out. A heavy test takes one slot for its whole length, before it starts anything;
// the slots are files shared by every worker process of one ava run, so at most `limit`
// heavy tests run at a time whatever the file. A test never waits for a second slot while
// holding one, so tests that start several processes at once cannot deadlock.
import type { ExecutionContext } from 'ava';
import { link, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isMainThread } from 'node:worker_threads';
import { processAlive } from '../../src/exec.ts';

const SLOTS_ROOT = join(tmpdir(), `pipeline-test-slots-${process.getuid?.() ?? 'user'}`);

/** `PIPELINE_TEST_SLOTS` heavy tests at once (default: one per core). */
export function slotLimit(): number {
  const configured = Number(process.env.PIPELINE_TEST_SLOTS);
  return Number.isInteger(configured) && configured > 0 ? configured : availableParallelism();
}

/**
 * The ava run this process belongs to: ava's main process forks one child per test file
 * (`workerThreads: false`), or runs the files in its own threads.
 */
function runId(): number {
  return isMainThread ? process.ppid : process.pid;
}

const held = new WeakMap<ExecutionContext, Promise<void>>();
let cleaned: Promise<void> | undefined;

/**
 * Takes a heavy-test slot for this test (once; later calls return at once) and gives it
 * back when the test ends, passed or not. A worker that dies leaves its slots behind: the
 * next one to look finds their owner gone and takes them over.
 */
export function heavySlot(t: ExecutionContext): Promise<void> {
  let taking = held.get(t);
  if (!taking) held.set(t, (taking = takeFor(t)));
  return taking;
}

async function takeFor(t: ExecutionContext): Promise<void> {
  cleaned ??= removeDeadRuns();
  await cleaned;
  const release = await acquireSlot(join(SLOTS_ROOT, `run-${runId()}`), slotLimit());
  t.teardown(release);
}

/** Waits for one of `limit` slot files in `dir`; returns the function that gives it back. */
export async function acquireSlot(dir: string, limit: number): Promise<() => Promise<void>> {
  await mkdir(dir, { recursive: true });
  for (;;) {
    for (let slot = 0; slot < limit; slot++) {
      const path = join(dir, `slot-${slot}`);
      if (await tryTake(path)) return () => rm(path, { force: true });
    }
    // Jittered, so the waiters of several processes do not wake in lockstep.
    await sleep(50 + Math.random() * 100);
  }
}

async function tryTake(path: string): Promise<boolean> {
  // Written aside and linked into place (link never replaces), so a slot file always
  // names its owner.
  const claim = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  await writeFile(claim, `${process.pid}\n`);
  try {
    await link(claim, path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    await rm(claim, { force: true });
  }
  const owner = await ownerOf(path);
  // A takeover racing a fresh owner could at worst let one extra test run, never lose one.
  if (owner === undefined || processAlive(owner)) return false;
  if ((await ownerOf(path)) === owner) await rm(path, { force: true });
  return false;
}

async function ownerOf(path: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(path, 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Slot directories of ava runs that have ended (their main process is gone). */
async function removeDeadRuns(): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(SLOTS_ROOT);
  } catch {
    return;
  }
  for (const entry of entries) {
    const pid = Number(entry.replace(/^run-/, ''));
    if (Number.isInteger(pid) && pid > 0 && !processAlive(pid)) await rm(join(SLOTS_ROOT, entry), { recursive: true, force: true });
  }
}
