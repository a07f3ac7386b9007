// What a run killed at a bad moment must not leave behind, as the chaos tests check it:
// processes (found by a mark in their environment, which every descendant inherits),
// temp files and scratch dirs, and secrets anywhere on disk.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';

/** The environment variable that marks a run's processes. */
export const MARK_VARIABLE = 'PIPELINE_CHAOS_MARK';

export function newMark(): string {
  return randomBytes(6).toString('hex');
}

/** Live processes (not zombies) whose environment carries the mark: pid and command line. */
export async function markedProcesses(mark: string): Promise<Array<{ pid: number; command: string }>> {
  const needle = Buffer.from(`${MARK_VARIABLE}=${mark}\0`);
  const found: Array<{ pid: number; command: string }> = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environ = await readFile(`/proc/${entry}/environ`);
      if (!environ.includes(needle)) continue;
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const state = stat.charAt(stat.lastIndexOf(')') + 2);
      if (state === 'Z' || state === 'X') continue;
      const command = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0').join(' ').trim().slice(0, 120);
      found.push({ pid: Number(entry), command });
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

/** Waits until no process carries the mark; returns those still there after the timeout. */
export async function waitNoMarkedProcesses(mark: string, timeoutMs: number): Promise<Array<{ pid: number; command: string }>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = await markedProcesses(mark);
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(50);
  }
}

/** Every file and directory under `dir` (relative paths), or none when it does not exist. */
export async function walk(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true }).catch(() => [] as string[])).sort();
}

/** Temp names of this tool (`.{name}.{pid}[@host].{hex}.tmp`) and staging dirs under `dir`. */
export async function tempDebris(dir: string): Promise<string[]> {
  return (await walk(dir)).filter((path) => /(^|\/)\.[^/]+\.\d+(@[A-Za-z0-9-]+)?\.[0-9a-f]{8}\.tmp(\/|$)/.test(path) && !/\.tmp\//.test(path));
}

/** Files under `dir` that hold an OpenSSH private key. */
export async function privateKeysUnder(dir: string): Promise<string[]> {
  const keys: string[] = [];
  for (const path of await walk(dir)) {
    try {
      const text = await readFile(join(dir, path), 'utf8');
      if (text.includes('PRIVATE KEY-----')) keys.push(path);
    } catch {
      // a directory, or gone
    }
  }
  return keys;
}
