// Concurrency bounds in the manner of Ninja: `--jobs` bounds all work, and named pools
// bound kinds of work separately (one packer VM at a time, a few network transfers).

class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  tryAcquire(): boolean {
    if (this.active >= this.limit) return false;
    this.active++;
    return true;
  }

  release(): void {
    this.active--;
    // Wake every waiter: one that cannot proceed (its other semaphore is full) must not
    // swallow the wake-up another waiter could have used.
    for (const wake of this.waiting.splice(0)) wake();
  }

  /** Resolves the next time a slot is released (the caller then retries). */
  whenReleased(): Promise<void> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

export class Limits {
  private readonly jobs: Semaphore;
  private readonly pools = new Map<string, Semaphore>();

  constructor(jobs: number, pools: Readonly<Record<string, number>>) {
    this.jobs = new Semaphore(Math.max(1, jobs));
    for (const [name, limit] of Object.entries(pools)) this.pools.set(name, new Semaphore(Math.max(1, limit)));
  }

  /**
   * Takes a job slot and the pool's slot together, so a node waiting for its pool never
   * holds a job slot another kind of work could use. Returns the release function.
   * `onWait` hears what it waits for whenever that changes: the pool's name, or `job`.
   */
  async acquire(pool: string | undefined, onWait?: (slot: string) => void): Promise<() => void> {
    const poolSemaphore = pool === undefined ? undefined : this.pools.get(pool);
    let waitingFor: string | undefined;
    const wait = (slot: string): void => {
      if (slot !== waitingFor) onWait?.((waitingFor = slot));
    };
    for (;;) {
      if (poolSemaphore && !poolSemaphore.tryAcquire()) {
        wait(pool!);
        await poolSemaphore.whenReleased();
        continue;
      }
      if (!this.jobs.tryAcquire()) {
        poolSemaphore?.release();
        wait('job');
        await this.jobs.whenReleased();
        continue;
      }
      let released = false;
      return () => {
        if (released) return;
        released = true;
        this.jobs.release();
        poolSemaphore?.release();
      };
    }
  }
}
