// The files a download keeps beside its target while it runs, and what makes them one
// process's:
//
//   .{name}.partial        the bytes so far, each piece written at its offset
//   .{name}.partial.json   how far each piece got (the resume state)
//   .{name}.partial.lock   who is downloading into them now
//
// A second download of the same image into the same directory waits for the lock (and
// then finds the image there), so no two processes ever write one partial file: the
// SHA-256 computed while the bytes arrive is the SHA-256 of what is on disk when it is
// renamed. A holder that died (kill -9, a reboot) is found gone and its lock taken over
// (src/lock.ts). The resume state is saved every few seconds while the transfer runs,
// each time after the bytes it counts are flushed, so a download killed outright resumes
// from its last save.
import { readFile, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { acquireLock, writeFileAtomic } from '../../src/index.ts';

export interface PartialPaths {
  readonly data: string;
  readonly state: string;
  readonly lock: string;
}

export function partialPathsFor(finalPath: string): PartialPaths {
  const data = join(dirname(finalPath), `.${basename(finalPath)}.partial`);
  return { data, state: `${data}.json`, lock: `${data}.lock` };
}

export interface PartialLock {
  release(): Promise<void>;
}

/** Waits until no other process downloads into `paths` (saying so once), then holds them. */
export async function lockPartial(paths: PartialPaths, finalPath: string, options: { signal: AbortSignal; log: (line: string) => void }): Promise<PartialLock> {
  return acquireLock(paths.lock, {
    wait: true,
    signal: options.signal,
    onWait: (holder) => options.log(`another download into ${finalPath} is under way (${holder}); waiting for it`),
    onTakeover: (what) => options.log(`took over ${what} for ${finalPath}`),
  });
}

const resumeStateSchema = z.object({
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  pieces: z.array(z.object({ id: z.string().max(200), size: z.number().int().nonnegative() })).max(100_000),
  done: z.array(z.number().int().nonnegative()).max(100_000),
});

export type ResumeState = z.infer<typeof resumeStateSchema>;

/** The state a previous download left, when it is one (anything else is ignored: the download starts over). */
export async function readResumeState(path: string): Promise<ResumeState | undefined> {
  try {
    const text = await readFile(path, 'utf8');
    if (text.length > 16 * 1024 * 1024) return undefined;
    const parsed = resumeStateSchema.safeParse(JSON.parse(text));
    return parsed.success && parsed.data.done.length === parsed.data.pieces.length ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export async function writeResumeState(path: string, state: ResumeState): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(state));
}

export async function removeResumeState(paths: PartialPaths): Promise<void> {
  await Promise.all([rm(paths.data, { force: true }), rm(paths.state, { force: true })]);
}

/** How often a running download saves its resume state. */
export const CHECKPOINT_MS = 2_000;

/**
 * Saves the resume state every `intervalMs` while a transfer runs. `flushed` flushes the
 * partial file and returns how far each piece is on disk now; only that is saved.
 */
export class ResumeCheckpoints {
  private timer: NodeJS.Timeout | undefined;
  private saving: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly path: string,
    private readonly state: Omit<ResumeState, 'done'>,
    private readonly flushed: () => Promise<number[]>,
    private readonly intervalMs = CHECKPOINT_MS,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      if (!this.saving && !this.stopped) this.saving = this.save().finally(() => (this.saving = undefined));
    }, this.intervalMs);
    this.timer.unref();
  }

  /** Stops saving and waits for a save under way (the partial file may be closed after this). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.saving;
  }

  private async save(): Promise<void> {
    try {
      const done = await this.flushed();
      if (!this.stopped) await writeResumeState(this.path, { ...this.state, done });
    } catch {
      // A failed save costs only a longer resume; the transfer reports its own errors.
    }
  }
}
