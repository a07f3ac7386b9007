// `npm run chaos`: the long chaos run. Kills `pipeline` with SIGKILL or SIGINT at random
// moments of each area's work (test/chaos/), re-runs it and checks what it left. Seeded:
// the seed is printed first, and CHAOS_SEED=N replays the same kills in the same order.
//
//   CHAOS_TRIALS    trials per area (default 50)
//   CHAOS_AREAS     comma-separated areas (default: all)
//   CHAOS_MINUTES   no trial starts after this many minutes (default 120)
//   CHAOS_SEED      the seed to replay
import { chooseSeed, describeTrial, scope, seededRandom, type TrialReport } from '../test/chaos/harness.ts';
import { CHAOS_AREAS, type AreaName } from '../test/chaos/areas.ts';

const seed = chooseSeed();
const trials = Number(process.env.CHAOS_TRIALS ?? 50);
const minutes = Number(process.env.CHAOS_MINUTES ?? 120);
const areas = (process.env.CHAOS_AREAS ?? Object.keys(CHAOS_AREAS).join(',')).split(',').map((name) => name.trim()) as AreaName[];
for (const area of areas) if (!(area in CHAOS_AREAS)) throw new Error(`unknown chaos area ${area}: use ${Object.keys(CHAOS_AREAS).join(', ')}`);

console.log(`chaos seed ${seed} (replay: CHAOS_SEED=${seed} npm run chaos); ${trials} trials per area: ${areas.join(', ')}; at most ${minutes} min`);
const deadline = Date.now() + minutes * 60_000;
const all: TrialReport[] = [];
const started = Date.now();
for (const area of areas) {
  // Each area draws from its own stream of the seed, so replaying one area alone gives the same kills.
  const random = seededRandom(seed ^ hashName(area));
  const owned = scope();
  // Stopped early (Ctrl-C, a timeout): the trial's project and server go too.
  const stop = (signal: NodeJS.Signals): void => {
    void owned.close().finally(() => process.kill(process.pid, signal));
  };
  process.once('SIGINT', stop).once('SIGTERM', stop);
  try {
    all.push(...(await CHAOS_AREAS[area]({ scope: owned, random, trials, deadline, onReport: (report) => console.log(describeTrial(report)) })));
  } finally {
    process.off('SIGINT', stop).off('SIGTERM', stop);
    await owned.close();
  }
}
const failed = all.filter((report) => report.problems.length > 0);
for (const area of areas) {
  const mine = all.filter((report) => report.area === area);
  console.log(
    `${area}: ${mine.length} trials, ${mine.filter((report) => report.problems.length > 0).length} failed, ${mine.filter((r) => r.signal === 'SIGKILL').length} SIGKILL / ${mine.filter((r) => r.signal === 'SIGINT').length} SIGINT`,
  );
}
console.log(`chaos seed ${seed}: ${all.length} trials, ${failed.length} failed, ${((Date.now() - started) / 60_000).toFixed(1)} min`);
process.exitCode = failed.length > 0 ? 1 : 0;

function hashName(name: string): number {
  let hash = 2166136261;
  for (const char of name) hash = Math.imul(hash ^ char.charCodeAt(0), 16777619);
  return hash >>> 0;
}
