// Property: the hand check that lets a steps config skip zod (`isPlainStepsConfig`) never
// passes a config zod refuses, so every config error still gets zod's one-line message;
// and it passes every well-formed config, so a real tree does skip zod. Random configs,
// well-formed and with one mistake each; the seed is printed (CONFIG_CHECK_SEED replays).
import test from 'ava';
import fc from 'fast-check';
import { isPlainStepsConfig } from '../../src/config-plain-check.ts';
import { z } from 'zod';
import { configSchemas } from '../../src/config-validate.ts';

const stepsConfigSchema = configSchemas(z).stepsConfig;

const seed = Number(process.env.CONFIG_CHECK_SEED ?? Date.now() % 2 ** 31);
const RUNS = 2_000;

const name = fc.stringMatching(/^[a-z][a-z0-9:-]{0,8}$/);
const strings = fc.array(fc.string({ maxLength: 12 }), { maxLength: 4 });
const step = fc.record(
  {
    description: fc.string({ maxLength: 20 }),
    deps: strings,
    inputs: strings,
    files: strings,
    outputs: strings,
    env: strings,
    pool: name,
    command: fc.array(fc.string({ maxLength: 12 }), { minLength: 1, maxLength: 4 }),
    run: fc.constant(async () => undefined),
  },
  { requiredKeys: [] },
);
const wellFormed = fc.record(
  {
    steps: fc.dictionary(name, step, { maxKeys: 6 }),
    aliases: fc.dictionary(name, strings, { maxKeys: 3 }),
    pools: fc.dictionary(name, fc.integer({ min: 1, max: 64 }), { maxKeys: 3 }),
    defaultTarget: name,
  },
  { requiredKeys: ['steps'] },
);

type Config = Record<string, unknown> & { steps: Record<string, Record<string, unknown>> };

/** Values that are almost right somewhere: the mistakes a hand check could let through. */
const nearMiss = fc.constantFrom<unknown>(
  undefined,
  null,
  [],
  [undefined],
  ['a', 1],
  // A hole: [, 'a'].
  Object.assign(new Array<string>(2), { 1: 'a' }),
  'true',
  0,
  -1,
  1.5,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  {},
  Object.create(null) as object,
  new (class Step {})(),
  new Date(0),
  () => undefined,
);
const value = fc.oneof(nearMiss, fc.anything());

/** One mistake (or an unusual but valid shape) put into a well-formed config. */
const mistake = fc.oneof(
  fc.record({ where: fc.constant('top' as const), key: fc.constantFrom('steps', 'aliases', 'pools', 'defaultTarget', 'stesp', 'nodes'), value }),
  fc.record({
    where: fc.constant('step' as const),
    key: fc.constantFrom('description', 'deps', 'inputs', 'files', 'outputs', 'env', 'pool', 'command', 'run', 'comand', 'outptus'),
    value,
  }),
  fc.record({ where: fc.constant('pool' as const), key: name, value: fc.oneof(nearMiss, fc.double(), fc.integer({ min: -3, max: 3 })) }),
  fc.record({ where: fc.constant('alias' as const), key: name, value }),
);

function withMistake(config: Config, change: { where: 'top' | 'step' | 'pool' | 'alias'; key: string; value: unknown }): Config {
  const copy: Config = { ...config, steps: { ...config.steps } };
  if (change.where === 'top') copy[change.key] = change.value;
  else if (change.where === 'pool') copy.pools = { ...(config.pools as object | undefined), [change.key]: change.value };
  else if (change.where === 'alias') copy.aliases = { ...(config.aliases as object | undefined), [change.key]: change.value };
  else copy.steps.x = { command: ['true'], [change.key]: change.value };
  return copy;
}

test(`the hand check passes only what zod accepts, and every well-formed config`, (t) => {
  t.log(`seed ${seed} (replay: CONFIG_CHECK_SEED=${seed})`);
  let refused = 0;
  fc.assert(
    fc.property(wellFormed, fc.option(mistake, { nil: undefined }), (config, change) => {
      const value = change ? withMistake(config as Config, change) : config;
      const verdict = stepsConfigSchema.safeParse(value);
      if (!verdict.success) refused++;
      const plain = isPlainStepsConfig(value);
      if (plain && !verdict.success) throw new Error(`the hand check passed a config zod refuses: ${verdict.error.issues[0]?.message}`);
      if (!change && !plain) throw new Error('the hand check refused a well-formed config: zod would run for nothing');
    }),
    { seed, numRuns: RUNS },
  );
  t.true(refused > RUNS / 10, `only ${refused} of ${RUNS} configs were ones zod refuses: the property checks little`);
});

test(`any value as the steps or as one step: the hand check never passes what zod refuses`, (t) => {
  t.log(`seed ${seed} (replay: CONFIG_CHECK_SEED=${seed})`);
  const anything = fc.anything({ withObjectString: true, withNullPrototype: true, withSparseArray: true, withBoxedValues: true });
  let passed = 0;
  fc.assert(
    fc.property(
      fc.oneof(
        anything.map((steps) => ({ steps })),
        anything.map((one) => ({ steps: { a: one } })),
      ),
      (value) => {
        if (!isPlainStepsConfig(value)) return;
        passed++;
        if (!stepsConfigSchema.safeParse(value).success) throw new Error(`the hand check passed a config zod refuses: ${JSON.stringify(value)}`);
      },
    ),
    { seed, numRuns: RUNS },
  );
  t.true(passed > 0, 'no generated value passed the hand check: the property checks nothing');
});
