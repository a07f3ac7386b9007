// Human formatting shared by the renderers: sizes, durations, and progress with speed
// and ETA measured over a sliding window.
import type { ProgressUnit } from '../types.ts';

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`;
}

const WINDOW_MS = 5_000;
const BAR_WIDTH = 20;

/**
 * Tracks one bar's recent samples to report speed and time left. In `bytes` the bar shows
 * bytes done of the total; in `percent` (a tool that reports only how far along it is)
 * it shows the percentage alone, since no byte count would match the file.
 */
export class ProgressMeter {
  private readonly samples: Array<{ at: number; done: number }> = [];
  done = 0;
  total: number | undefined;

  constructor(readonly unit: ProgressUnit = 'bytes') {}

  /**
   * Whether a sample continues this bar: same unit, same total, not behind it. Anything
   * else (a retry from zero, hashing after a download) is a new bar, so no bar ever goes
   * backwards.
   */
  continues(done: number, total: number | undefined, unit: ProgressUnit): boolean {
    return unit === this.unit && total === this.total && done >= this.done;
  }

  update(done: number, total: number | undefined, now = Date.now()): void {
    // A caller that restarts on the same meter (a retry) starts a new measurement.
    if (done < this.done) this.samples.length = 0;
    this.done = done;
    this.total = total;
    this.samples.push({ at: now, done });
    while (this.samples.length > 2 && now - this.samples[0]!.at > WINDOW_MS) this.samples.shift();
  }

  /** Units (bytes, or percentage points) per second over the window, or undefined before two samples. */
  speed(): number | undefined {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (!first || !last || last.at <= first.at) return undefined;
    return (last.done - first.done) / ((last.at - first.at) / 1000);
  }

  fraction(): number | undefined {
    return this.total ? Math.min(1, this.done / this.total) : undefined;
  }

  describe(withBar: boolean): string {
    const parts: string[] = [];
    const fraction = this.fraction();
    if (fraction !== undefined) {
      const percent = `${Math.floor(fraction * 100)}%`;
      const filled = Math.round(fraction * BAR_WIDTH);
      parts.push(withBar ? `[${'█'.repeat(filled)}${'░'.repeat(BAR_WIDTH - filled)}] ${percent}` : percent);
      if (this.unit === 'bytes') parts.push(`${formatBytes(this.done)} / ${formatBytes(this.total!)}`);
    } else {
      parts.push(this.unit === 'bytes' ? formatBytes(this.done) : `${Math.floor(this.done)}%`);
    }
    const speed = this.speed();
    if (speed !== undefined && speed > 0) {
      if (this.unit === 'bytes') parts.push(`${formatBytes(speed)}/s`);
      if (this.total) parts.push(`ETA ${formatDuration(((this.total - this.done) / speed) * 1000)}`);
    }
    return parts.join(' · ');
  }
}
