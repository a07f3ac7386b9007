// The short seeded slice of the chaos suite that runs with `npm test`: a few kills per
// area (the long run is `npm run chaos`, see RELIABILITY.md). The seed is printed; run
// again with CHAOS_SEED=N to replay the same kills.
import test from 'ava';
import { CHAOS_AREAS, type AreaName } from './chaos/areas.ts';
import { chooseSeed, describeTrial, seededRandom } from './chaos/harness.ts';

const TRIALS = Number(process.env.CHAOS_SLICE_TRIALS ?? 3);
const seed = chooseSeed();

for (const area of Object.keys(CHAOS_AREAS) as AreaName[]) {
  test(`chaos slice: ${area}, up to ${TRIALS} kills at random moments, seed ${seed}`, async (t) => {
    t.log(`seed ${seed} (replay: CHAOS_SEED=${seed} npx ava test/chaos-slice.test.ts)`);
    // The project helpers take this test's heavy slot and clean up through the test itself.
    const reports = await CHAOS_AREAS[area]({
      scope: { t, close: async () => undefined },
      random: seededRandom(seed),
      trials: TRIALS,
      // Under ava's two-minute timeout whatever the machine: no trial starts after a minute.
      deadline: Date.now() + 60_000,
      onReport: (report) => t.log(describeTrial(report)),
    });
    t.true(reports.length > 0, 'at least one trial ran');
    t.deepEqual(
      reports.flatMap((report) => report.problems.map((problem) => `#${report.trial} ${report.signal}: ${problem}`)),
      [],
    );
  });
}
