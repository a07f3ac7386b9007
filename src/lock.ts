// One `pipeline` at a time per tree. The lock file names its holder (pid, host, boot,
// process start time) and is created atomically with its content in place: written to a
// temp file, then hard-linked to the lock path, which fails if the path exists. So a lock
// is never empty, whatever the disk or a kill does.
//
// A second process waits (saying so) or, with --no-wait, fails. A lock whose holder is
// gone (dead pid, a pid reused since, a reboot, or a holder on another host that stopped
// refreshing it) is taken over; so is an unreadable lock once it is clearly old, since no
// pipeline ever leaves one being written. Takeover is atomic: a waiter must first create
// a claim named after the dead lock's nonce, and only one can; the claim of a waiter that
// died is superseded by a claim of the next generation, never deleted, so no waiter can
// remove a lock another one has just taken.
//
// The file operations are synchronous: each is one quick system call, and every run takes
// and releases the lock, where a thread-pool round trip would wait for a free core.
import { linkSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, type Stats } from 'node:fs';
import { utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { entriesOf } from './debris.ts';
import { processAlive } from './exec.ts';
import { Failure } from './failure.ts';

export interface LockOptions {
  readonly wait: boolean;
  readonly signal: AbortSignal;
  /** Called once when the lock is held by another process and we start waiting. */
  readonly onWait?: (holder: string) => void;
  /** Called when a lock left by a gone holder is taken over (what it was, and why). */
  readonly onTakeover?: (what: string) => void;
  readonly pollMs?: number;
  /** How often the holder touches the lock, and after how long without a touch a holder on another host counts as gone. */
  readonly heartbeatMs?: number;
  readonly staleAfterMs?: number;
  /** An unreadable lock older than this is taken over (a lock is never unreadable while being written). */
  readonly unreadableGraceMs?: number;
}

export interface Lock {
  release(): Promise<void>;
}

/** What a lock file says about its holder. */
export interface LockHolder {
  readonly pid: number;
  readonly host: string;
  /** Linux boot id: a holder from before a reboot is gone whatever its pid. */
  readonly boot?: string;
  /** The holder's start time in clock ticks since boot (/proc/<pid>/stat): tells a reused pid. */
  readonly processStart?: string;
  readonly startedAt: string;
  readonly command: string;
  /** Unique per lock: claims to take this lock over are named after it. */
  readonly nonce: string;
}

const DEFAULTS = { pollMs: 200, heartbeatMs: 30_000, staleAfterMs: 120_000, unreadableGraceMs: 5_000 };

export async function acquireLock(path: string, options: LockOptions): Promise<Lock> {
  const settings = { ...DEFAULTS, ...definedOnly(options) };
  mkdirSync(dirname(path), { recursive: true });
  const me = await describeSelf();
  let told = false;
  for (;;) {
    options.signal.throwIfAborted();
    if (await tryCreate(path, me)) return holdLock(path, me, settings.heartbeatMs);
    const found = await inspect(path);
    if (found === 'absent') continue;
    const gone = await whyGone(found, settings);
    if (gone !== undefined) {
      if (await takeOver(path, found, me, settings)) options.onTakeover?.(gone);
      continue;
    }
    if (!options.wait) {
      if (found.kind === 'unreadable') {
        throw new Failure(
          'setup',
          `the lock ${path} is unreadable (written ${ago(found.mtimeMs)}); if no other pipeline runs in this tree, remove it, or run without --no-wait to take it over in ${Math.round(settings.unreadableGraceMs / 1000)} s`,
        );
      }
      throw new Failure('setup', `another pipeline is running in this tree (${describeHolder(found.holder)}); wait for it, or run without --no-wait to queue`);
    }
    const who = found.kind === 'unreadable' ? `an unreadable lock file ${path}, written ${ago(found.mtimeMs)}` : describeHolder(found.holder);
    if (!told) {
      options.onWait?.(who);
      told = true;
    }
    await sleep(settings.pollMs, undefined, { signal: options.signal });
  }
}

type Inspection =
  | 'absent'
  | { kind: 'held'; holder: LockHolder; mtimeMs: number; ino: number }
  | { kind: 'unreadable'; mtimeMs: number; ino: number; text: string };

/** Creates the lock with its whole content in one step, or returns false if it exists. */
async function tryCreate(path: string, me: LockHolder): Promise<boolean> {
  // Created exclusively (wx), so its name need only be unlikely to be taken.
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomHex(8)}.tmp`);
  try {
    writeFileSync(temp, `${JSON.stringify(me)}\n`, { flag: 'wx' });
    linkSync(temp, path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new Failure('setup', `cannot create the lock ${path}: ${(error as Error).message}`, { cause: error });
  } finally {
    rmSync(temp, { force: true });
  }
}

function holdLock(path: string, me: LockHolder, heartbeatMs: number): Lock {
  // Holders on other hosts cannot be checked by pid; a lock nobody touches is stale.
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => undefined);
  }, heartbeatMs);
  heartbeat.unref();
  return {
    async release() {
      clearInterval(heartbeat);
      // Remove it only while it is still ours (a lock is never taken from a live holder,
      // but a paused process may have been judged gone).
      const found = await inspect(path);
      if (found !== 'absent' && found.kind === 'held' && found.holder.nonce === me.nonce) rmSync(path, { force: true });
      await removeClaims(path);
    },
  };
}

async function inspect(path: string): Promise<Inspection> {
  let text: string;
  let info: Stats;
  try {
    info = statSync(path);
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw new Failure('setup', `cannot read the lock ${path}: ${(error as Error).message}`, { cause: error });
  }
  const holder = parseHolder(text) ?? parseLegacyHolder(text, info.ino);
  if (!holder) return { kind: 'unreadable', mtimeMs: info.mtimeMs, ino: info.ino, text };
  return { kind: 'held', holder, mtimeMs: info.mtimeMs, ino: info.ino };
}

export function parseHolder(text: string): LockHolder | undefined {
  try {
    const value = JSON.parse(text) as Partial<LockHolder>;
    if (!Number.isInteger(value.pid) || (value.pid ?? 0) <= 0) return undefined;
    // The nonce becomes part of claim file names.
    if (typeof value.host !== 'string' || typeof value.nonce !== 'string' || !/^[0-9a-f]{16,64}$/.test(value.nonce)) return undefined;
    return {
      pid: value.pid!,
      host: value.host,
      nonce: value.nonce,
      startedAt: typeof value.startedAt === 'string' ? value.startedAt : '?',
      command: typeof value.command === 'string' ? value.command : '',
      ...(typeof value.boot === 'string' ? { boot: value.boot } : {}),
      ...(typeof value.processStart === 'string' ? { processStart: value.processStart } : {}),
    };
  } catch {
    return undefined;
  }
}

/** `pid ISO-time command`: the lock of pipeline 0.1, always of a process on this host. */
function parseLegacyHolder(text: string, ino: number): LockHolder | undefined {
  const match = /^(\d+) (\S+)(?: (.*))?\n?$/.exec(text);
  const pid = Number(match?.[1]);
  if (!match || !Number.isInteger(pid) || pid <= 0) return undefined;
  return { pid, host: hostname(), startedAt: match[2]!, command: match[3] ?? '', nonce: `legacy-${ino}-${pid}` };
}

/** Why the lock's holder is gone (said when taking it over), or undefined while it may still run. */
async function whyGone(found: Exclude<Inspection, 'absent'>, settings: typeof DEFAULTS): Promise<string | undefined> {
  const age = Date.now() - found.mtimeMs;
  if (found.kind === 'unreadable') {
    if (age < settings.unreadableGraceMs) return undefined;
    const what = found.text.trim() === '' ? 'an empty lock file' : 'an unreadable lock file';
    return `${what} (last written ${ago(found.mtimeMs)}; a pipeline never leaves one)`;
  }
  const { holder } = found;
  if (holder.host !== hostname()) {
    return age > settings.staleAfterMs ? `a lock of ${describeHolder(holder)} not refreshed for ${Math.round(age / 1000)} s` : undefined;
  }
  const self = await describeSelf();
  if (holder.boot && self.boot && holder.boot !== self.boot) return `a lock of ${describeHolder(holder)} from before the last reboot`;
  if (!processAlive(holder.pid)) return `a lock of ${describeHolder(holder)}, which is no longer running`;
  if (holder.processStart) {
    const start = await processStartTicks(holder.pid);
    if (start !== undefined && start !== holder.processStart) return `a lock of ${describeHolder(holder)}, whose pid now belongs to another process`;
  }
  return undefined;
}

/**
 * Removes a lock whose holder is gone, if this process wins the claim on it (true when it did). Claims are
 * `{lock}.claim.{nonce}.{generation}`, created exclusively: one winner per generation. A
 * waiter only opens generation g+1 when the holder of g is itself gone, so a live
 * claimant is never overtaken, and the lock removed is always the one inspected (only a
 * claim winner removes a lock, and a new lock can only appear once it is removed).
 */
async function takeOver(path: string, found: Exclude<Inspection, 'absent'>, me: LockHolder, settings: typeof DEFAULTS): Promise<boolean> {
  const nonce = found.kind === 'held' ? found.holder.nonce : `unreadable-${found.ino}-${Math.floor(found.mtimeMs)}`;
  const prefix = `${basename(path)}.claim.${nonce}.`;
  const generations = readdirSync(dirname(path))
    .filter((name) => name.startsWith(prefix))
    .map((name) => Number(name.slice(prefix.length)))
    .filter((generation) => Number.isInteger(generation));
  let next = 0;
  if (generations.length > 0) {
    const latest = Math.max(...generations);
    const claim = await inspect(join(dirname(path), `${prefix}${latest}`));
    // A claim whose writer may still run is not ours to supersede.
    if (claim !== 'absent' && (await whyGone(claim, settings)) === undefined) return false;
    next = latest + 1;
  }
  if (!(await tryCreate(join(dirname(path), `${prefix}${next}`), me))) return false;
  const again = await inspect(path);
  if (again === 'absent' || !sameLock(again, found)) return false; // someone took it over before us
  rmSync(path, { force: true });
  return true;
}

function sameLock(a: Exclude<Inspection, 'absent'>, b: Exclude<Inspection, 'absent'>): boolean {
  if (a.kind === 'held' && b.kind === 'held') return a.holder.nonce === b.holder.nonce;
  return a.kind === 'unreadable' && b.kind === 'unreadable' && a.ino === b.ino;
}

/** Claims refer to locks that are gone once someone holds a new one. */
async function removeClaims(path: string): Promise<void> {
  const prefix = `${basename(path)}.claim.`;
  for (const name of entriesOf(dirname(path))) if (name.startsWith(prefix)) rmSync(join(dirname(path), name), { force: true });
}

let self: Promise<LockHolder> | undefined;
function describeSelf(): Promise<LockHolder> {
  self ??= (async () => {
    const boot = (readTextOrUndefined('/proc/sys/kernel/random/boot_id') ?? '').trim();
    const processStart = await processStartTicks(process.pid);
    return {
      pid: process.pid,
      host: hostname(),
      ...(boot ? { boot } : {}),
      ...(processStart ? { processStart } : {}),
      startedAt: new Date().toISOString(),
      command: process.argv.slice(2).join(' '),
      nonce: nonceOf(boot, processStart),
    };
  })();
  return self;
}

/**
 * What tells this holder from every other, here or on another host sharing the tree: the
 * boot's random id, the pid and the process's start time, which no other process shares.
 * Unique, not secret (anyone who can read the lock can take it over by the rules); so no
 * node:crypto, which would cost a no-op run several milliseconds to load. Where /proc
 * says nothing, the time and Math.random stand in.
 */
function nonceOf(boot: string, processStart: string | undefined): string {
  const parts = [boot.replace(/[^0-9a-f]/gi, '').toLowerCase(), process.pid.toString(16)];
  if (processStart && /^\d+$/.test(processStart)) parts.push(BigInt(processStart).toString(16));
  if (!boot || !processStart) parts.push(Date.now().toString(16), randomHex(8));
  return parts.join('').slice(0, 64).padEnd(16, '0');
}

/** `digits` random hexadecimal digits (Math.random: unlikely to repeat, not unpredictable). */
function randomHex(digits: number): string {
  let hex = '';
  while (hex.length < digits)
    hex += Math.floor(Math.random() * 0x1_0000_0000)
      .toString(16)
      .padStart(8, '0');
  return hex.slice(0, digits);
}

/** Field 22 of /proc/<pid>/stat (start time), after the parenthesised command name. */
async function processStartTicks(pid: number): Promise<string | undefined> {
  const text = readTextOrUndefined(`/proc/${pid}/stat`);
  if (!text) return undefined;
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return fields[19];
}

function readTextOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function describeHolder(holder: LockHolder): string {
  const where = holder.host === hostname() ? '' : ` on ${holder.host}`;
  return `pid ${holder.pid}${where}, started ${holder.startedAt}`;
}

function ago(ms: number): string {
  return `${Math.max(0, Math.round((Date.now() - ms) / 1000))} s ago`;
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
