// Who uploaded a temporary asset, and whether that upload can still finish. A run id names
// the machine (a hash of host name and boot id) and the process, so a later upload on the
// same machine can tell a killed run's leftovers from a live one's; from another machine
// only age tells, and an upload older than a GitHub Actions job may run is over.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { processAlive } from '../../../src/index.ts';

/** GitHub Actions stops a job after 6 hours by default; no upload outlives that. */
export const ABANDONED_AFTER_MS = 6 * 60 * 60 * 1000;

let machine: string | undefined;
/** Runs of this process that have not ended: its other runs are over, like a dead process's. */
const activeRuns = new Set<string>();

/** Eight hex digits that differ between machines, and between boots of one machine. */
function machineId(): string {
  if (machine === undefined) {
    let boot = '';
    try {
      boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      // Not Linux: the host name alone.
    }
    machine = createHash('sha256').update(`${hostname()}\n${boot}`).digest('hex').slice(0, 8);
  }
  return machine;
}

/** A fresh run id, `{machine}-{pid}-{random}` in `[a-z0-9-]`, active until `endRun`. */
export function newRunId(): string {
  const run = `${machineId()}-${process.pid.toString(36)}-${randomBytes(3).toString('hex')}`;
  activeRuns.add(run);
  return run;
}

export function endRun(run: string): void {
  activeRuns.delete(run);
}

function parseRunId(run: string): { machine: string; pid: number } | undefined {
  const match = /^([0-9a-f]{8})-([0-9a-z]+)-[0-9a-f]+$/.exec(run);
  if (!match) return undefined;
  const pid = parseInt(match[2]!, 36);
  return Number.isSafeInteger(pid) && pid > 0 ? { machine: match[1]!, pid } : undefined;
}

/**
 * Whether the run that made an asset is over without finishing: it ran on this machine and
 * its process is gone, or it started longer ago than any upload takes.
 */
export function runIsOver(run: string, createdAt: string | undefined, now = Date.now()): boolean {
  const parsed = parseRunId(run);
  if (parsed && parsed.machine === machineId()) {
    if (parsed.pid === process.pid) return !activeRuns.has(run);
    if (!processAlive(parsed.pid)) return true;
  }
  const created = createdAt ? Date.parse(createdAt) : NaN;
  return Number.isFinite(created) && now - created > ABANDONED_AFTER_MS;
}
