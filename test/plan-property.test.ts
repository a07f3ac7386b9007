// Property: what `--dry-run --json` says is what the run does, over random tree states
// of the image project (see test/support/plan-property.ts). `npm test` runs a seeded
// slice; `npm run property:plan` runs 200 states with a fresh seed. A failure shrinks to
// a minimal state; PLAN_PROPERTY_SEED (and fast-check's printed path) replays it.
// PLAN_PROPERTY_TIMES=1 prints each state's command times on stderr as it goes.
import test from 'ava';
import fc from 'fast-check';
import { buildTree, commandOf, treeStates, type BuiltTree } from './support/plan-property.ts';

const DEFAULT_STATES = 25;
const DEFAULT_SEED = 424_242;
const states = Number(process.env.PLAN_PROPERTY_STATES ?? DEFAULT_STATES);
const seed = Number(process.env.PLAN_PROPERTY_SEED ?? (process.env.PLAN_PROPERTY_STATES ? Date.now() % 2 ** 31 : DEFAULT_SEED));
/** What one command of a state (dry run, run, second run) may take: what a whole test may. */
const COMMAND_BUDGET_MS = 120_000;

let tree: BuiltTree | undefined;

test.before(async (t) => {
  tree = await buildTree(() => t.timeout(COMMAND_BUDGET_MS, 'building the tree every state starts from'));
});

test.after.always(async () => {
  try {
    await tree?.assertUntouched();
  } finally {
    await tree?.remove();
  }
});

test(`the plan says what the run does: ${states} random tree states`, async (t) => {
  const replay = `seed ${seed} (replay: PLAN_PROPERTY_SEED=${seed} PLAN_PROPERTY_STATES=${states})`;
  // Said at once too: a long run stopped half-way can still be replayed.
  process.stderr.write(`plan property: ${states} states, ${replay}\n`);
  t.log(replay);
  const started = Date.now();
  let checked = 0;
  await t.notThrowsAsync(
    fc.assert(
      fc.asyncProperty(treeStates, async (state) => {
        checked++;
        const problems = await tree!.check(state, () => t.timeout(COMMAND_BUDGET_MS, 'one command of a tree state'));
        if (problems.length > 0) throw new Error(`pipeline ${commandOf(state).join(' ')}:\n  ${problems.join('\n  ')}`);
      }),
      { seed, numRuns: states },
    ),
  );
  t.log(`${checked} states checked (shrinking included) in ${Math.round((Date.now() - started) / 1000)}s`);
});
