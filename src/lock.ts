// One `pipeline` at a time per tree: an exclusive lock file holding the owner's pid. A
// second process waits (saying so) or, with --no-wait, fails. A lock left by a process
// that no longer exists is taken over.
import { open, readFile, rm, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processAlive } from './exec.ts';
import { Failure } from './failure.ts';

export interface LockOptions {
  readonly wait: boolean;
  readonly signal: AbortSignal;
  /** Called once when the lock is held by another process and we start waiting. */
  readonly onWait?: (holder: string) => void;
  readonly pollMs?: number;
}

export interface Lock {
  release(): Promise<void>;
}

export async function acquireLock(path: string, options: LockOptions): Promise<Lock> {
  await mkdir(dirname(path), { recursive: true });
  let told = false;
  for (;;) {
    options.signal.throwIfAborted();
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(`${process.pid} ${new Date().toISOString()} ${process.argv.slice(2).join(' ')}\n`);
      await handle.close();
      return { release: () => rm(path, { force: true }) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = await readHolder(path);
    if (holder && !processAlive(holder.pid)) {
      // The owner died without releasing; only remove the lock if it is still that one.
      const again = await readHolder(path);
      if (again?.pid === holder.pid) await rm(path, { force: true });
      continue;
    }
    const who = holder ? `pid ${holder.pid}, started ${holder.started}` : 'another process';
    if (!options.wait) throw new Failure('setup', `another pipeline is running in this tree (${who}); wait for it, or run without --no-wait to queue`);
    if (!told) {
      options.onWait?.(who);
      told = true;
    }
    await sleep(options.pollMs ?? 200, undefined, { signal: options.signal });
  }
}

async function readHolder(path: string): Promise<{ pid: number; started: string } | undefined> {
  try {
    const [pid, started] = (await readFile(path, 'utf8')).trim().split(' ');
    const parsed = Number(pid);
    return Number.isInteger(parsed) && parsed > 0 ? { pid: parsed, started: started ?? '?' } : undefined;
  } catch {
    return undefined;
  }
}
