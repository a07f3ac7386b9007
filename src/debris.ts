// What a run that died without cleaning up (kill -9, power loss) leaves behind, and how
// the next run recognises it: every temp name carries its writer's pid and host
// (`.{name}.{pid}@{host}.{random}.tmp`, see atomic.ts), and every per-run scratch
// directory is `.pipeline/run/{pid}@{host}/`. One whose writer is a process of this host
// that no longer exists is debris; anything of another host (a shared publish directory)
// or of a live process is left alone.
import { hostname, tmpdir } from 'node:os';
import { readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from './exec.ts';

/** This host as temp names carry it: its first label, letters, digits and dashes only. */
export const HOST_LABEL = (hostname().split('.')[0] ?? '').replace(/[^A-Za-z0-9-]/g, '').slice(0, 40) || 'host';

/** `{pid}@{host}`: who wrote a temp or owns a scratch directory. */
export const WRITER = `${process.pid}@${HOST_LABEL}`;

const TEMP_NAME = /^\..+\.(\d+)(?:@([A-Za-z0-9-]+))?\.[0-9a-f]{8}\.tmp$/;
const RUN_DIR_NAME = /^(\d+)@([A-Za-z0-9-]+)$/;
/** A short tool temp dir in the system temp dir: `pipeline-{pid}@{host}-` and mkdtemp's six characters. */
const SHORT_TEMP_NAME = /^pipeline-(\d+)@([A-Za-z0-9-]+)-[A-Za-z0-9]{6}$/;
/**
 * The longest directory a tool can make its Unix sockets in: the kernel's sun_path holds
 * 107 bytes, and a socket name such as packer's `packer-plugin1889198678` takes 24 of them
 * (with its slash) in the worst case we allow for.
 */
const SOCKET_DIR_LIMIT = 107 - 24;

/** Whether a writer (`pid`, `host`: absent in names older than the host) is gone from this host. */
function writerGone(pid: number, host: string | undefined): boolean {
  if (host !== undefined && host !== HOST_LABEL) return false;
  return pid !== process.pid && !processAlive(pid);
}

/** The abandoned temp files (or directories) in `dir`, by name; none when it cannot be read. */
export async function abandonedTemps(dir: string): Promise<string[]> {
  const entries = entriesOf(dir);
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

/**
 * A directory's entries, none when it cannot be read. Synchronous: every run sweeps a few
 * directories (and the lock reads its own), and a thread-pool round trip waits for a free
 * core on a busy machine.
 */
export function entriesOf(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
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

/**
 * A TMPDIR for a tool that makes Unix sockets in it (a deep project path would make their
 * paths too long to bind): `preferred`, created, when it is short enough, else a short
 * directory in the system temp dir named by this writer, which the next run removes if
 * this process died. The caller removes it when done.
 */
export async function toolTempDir(preferred: string): Promise<string> {
  if (Buffer.byteLength(preferred) <= SOCKET_DIR_LIMIT) {
    await mkdir(preferred, { recursive: true, mode: 0o700 });
    return preferred;
  }
  return mkdtemp(join(tmpdir(), `pipeline-${WRITER}-`));
}

/** Removes the scratch directories (and short tool temp dirs) of dead processes of this host; returns their paths. */
export async function removeAbandonedRunDirs(stateDir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const entry of entriesOf(tmpdir())) {
    const match = SHORT_TEMP_NAME.exec(entry);
    if (!match || !writerGone(Number(match[1]), match[2])) continue;
    await rm(join(tmpdir(), entry), { recursive: true, force: true }).catch(() => undefined);
    removed.push(join(tmpdir(), entry));
  }
  const base = runDirsRoot(stateDir);
  for (const entry of entriesOf(base)) {
    const match = RUN_DIR_NAME.exec(entry);
    if (!match || !writerGone(Number(match[1]), match[2])) continue;
    await rm(join(base, entry), { recursive: true, force: true }).catch(() => undefined);
    removed.push(join(base, entry));
  }
  return removed;
}
