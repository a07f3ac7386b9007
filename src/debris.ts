// What a run that died without cleaning up (kill -9, power loss) leaves behind, and how
// the next run recognises it: every temp name carries its writer's pid and host
// (`.{name}.{pid}@{host}.{random}.tmp`, see atomic.ts), and every per-run scratch
// directory is `.pipeline/run/{pid}@{host}/`. One whose writer is a process of this host
// that no longer exists is debris; anything of another host (a shared publish directory)
// or of a live process is left alone.
import { hostname } from 'node:os';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from './exec.ts';

/** This host as temp names carry it: its first label, letters, digits and dashes only. */
export const HOST_LABEL = (hostname().split('.')[0] ?? '').replace(/[^A-Za-z0-9-]/g, '').slice(0, 40) || 'host';

/** `{pid}@{host}`: who wrote a temp or owns a scratch directory. */
export const WRITER = `${process.pid}@${HOST_LABEL}`;

const TEMP_NAME = /^\..+\.(\d+)(?:@([A-Za-z0-9-]+))?\.[0-9a-f]{8}\.tmp$/;
const RUN_DIR_NAME = /^(\d+)@([A-Za-z0-9-]+)$/;

/** Whether a writer (`pid`, `host`: absent in names older than the host) is gone from this host. */
function writerGone(pid: number, host: string | undefined): boolean {
  if (host !== undefined && host !== HOST_LABEL) return false;
  return pid !== process.pid && !processAlive(pid);
}

/** The abandoned temp files (or directories) in `dir`, by name; none when it cannot be read. */
export async function abandonedTemps(dir: string): Promise<string[]> {
  const entries = await readdir(dir).catch(() => [] as string[]);
  return entries.filter((entry) => {
    const match = TEMP_NAME.exec(entry);
    return match !== null && writerGone(Number(match[1]), match[2]);
  });
}

/** Removes the abandoned temps in each directory; returns their paths. */
export async function removeAbandonedTemps(dirs: Iterable<string>): Promise<string[]> {
  const removed: string[] = [];
  for (const dir of new Set(dirs)) {
    for (const entry of await abandonedTemps(dir)) {
      const path = join(dir, entry);
      await rm(path, { recursive: true, force: true }).catch(() => undefined);
      removed.push(path);
    }
  }
  return removed;
}

function runDirsRoot(stateDir: string): string {
  return join(stateDir, 'run');
}

/** This process's scratch directory under the state dir (not created). */
export function ownRunDir(stateDir: string): string {
  return join(runDirsRoot(stateDir), WRITER);
}

/**
 * A fresh directory for secrets and tool temp files (build keys, packer's logs) inside this
 * process's `.pipeline/run/{pid}@{host}/`, readable by the user only. The caller removes it
 * when done; the run removes its whole run dir at the end, and the next run sweeps it if
 * this process died first.
 */
export async function makeScratchDir(root: string, label: string): Promise<string> {
  const own = ownRunDir(join(root, '.pipeline'));
  await mkdir(own, { recursive: true, mode: 0o700 });
  return mkdtemp(join(own, `${label}-`));
}

/** Removes the scratch directories of dead processes of this host; returns their paths. */
export async function removeAbandonedRunDirs(stateDir: string): Promise<string[]> {
  const removed: string[] = [];
  const base = runDirsRoot(stateDir);
  for (const entry of await readdir(base).catch(() => [] as string[])) {
    const match = RUN_DIR_NAME.exec(entry);
    if (!match || !writerGone(Number(match[1]), match[2])) continue;
    await rm(join(base, entry), { recursive: true, force: true }).catch(() => undefined);
    removed.push(join(base, entry));
  }
  return removed;
}
