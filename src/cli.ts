// Arguments to a request, and a request to an exit code: 0 success, 1 a task failed,
// 2 usage or config error, 130 interrupted.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { optionsTakingValues, parseCommandLine, type OptionSpecs } from './args.ts';
import { findConfig } from './config.ts';
import { errorOutput, formatOutput } from './report/contract.ts';
import { ProgressMeter } from './report/format.ts';
import { JsonReporter } from './report/json.ts';
import { PlainReporter } from './report/plain.ts';
import { fanOut, type Reporter } from './report/reporter.ts';
import { Session, type RunSettings } from './session.ts';
import { runStarter, type StarterCommands, starterUsages } from './starter-command.ts';
import { cancelledBy, exitCodeOf, isFailure, toFailure } from './failure.ts';
import { Failure, type Command, type CommandIO, type NodeId } from './types.ts';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_INTERRUPTED = 130;

const RUN_OPTIONS = {
  force: { type: 'boolean' },
  'dry-run': { type: 'boolean', short: 'n' },
  jobs: { type: 'string', short: 'j' },
  'keep-going': { type: 'boolean', short: 'k' },
  config: { type: 'string', short: 'c' },
  json: { type: 'boolean' },
  'no-wait': { type: 'boolean' },
  verbose: { type: 'boolean', short: 'v' },
  quiet: { type: 'boolean', short: 'q' },
  profile: { type: 'string' },
  format: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const satisfies OptionSpecs;

interface Output {
  out(line: string): void;
  err(line: string): void;
}

const stdio: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/**
 * A reader that went away (`pipeline plan --json | head -1`) is not a failure of the run:
 * what was left to print is dropped, as a reader closing a pipe asks, and the run goes on
 * to its end (interrupting a build halfway would waste it). Node would otherwise die of
 * an unhandled EPIPE with a stack trace.
 */
function ignoreClosedReader(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') throw error;
    });
  }
}

/** `starters`: commands that need no config (`init`), from the package's bin. */
export async function main(argv: readonly string[], io: Output = stdio, starters: StarterCommands = {}): Promise<number> {
  if (io === stdio) ignoreClosedReader();
  const interrupt = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupt.signal.aborted) process.exit(EXIT_INTERRUPTED); // a second Ctrl-C: leave now
    io.err(`pipeline: ${signal}: stopping running tasks and cleaning up (again to quit at once)`);
    interrupt.abort(cancelledBy(signal));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const context: DispatchContext = { wroteOut: false };
  const tracked: Output = {
    out: (line) => {
      context.wroteOut = true;
      io.out(line);
    },
    err: io.err,
  };
  try {
    const code = await dispatch(argv, tracked, interrupt.signal, context, starters);
    return interrupt.signal.aborted ? EXIT_INTERRUPTED : code;
  } catch (error) {
    // --json readers get the failure as the one JSON object on stdout, with its kind
    // (unless a result is there already: stdout holds one object, never two).
    if (argv.includes('--json') && !context.wroteOut) {
      const failure = toFailure(interrupt.signal.aborted ? interrupt.signal.reason : error);
      io.out(formatOutput(errorOutput(commandName(argv, context.session), failure)));
    }
    if (interrupt.signal.aborted) return EXIT_INTERRUPTED;
    if (isFailure(error)) {
      io.err(`pipeline: ${error.message}`);
      return exitCodeOf(error);
    }
    // Not a Failure: a bug in pipeline or a task kind, so the stack is worth showing.
    io.err(`pipeline: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    return EXIT_FAILED;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** What the error path needs to know of how far dispatch got. */
interface DispatchContext {
  session?: Session;
  wroteOut: boolean;
}

async function dispatch(argv: readonly string[], io: Output, signal: AbortSignal, context: DispatchContext, starters: StarterCommands): Promise<number> {
  // The config decides which extra flags and commands exist, so find it first.
  const configArg = findConfigArgument(argv);
  // --version is the tool's only before the first word; after it a command may own it
  // (`images list --version TAG`).
  const word = firstWord(argv);
  const globalArgs = word === undefined ? argv : argv.slice(0, argv.indexOf(word));
  if (globalArgs.includes('--version') || globalArgs.includes('-V')) {
    io.out(packageVersion());
    return EXIT_OK;
  }
  const starter = word === undefined ? undefined : starters[word];
  if (starter) return runStarter(starter, argv.slice(argv.indexOf(word!) + 1), { cwd: process.cwd(), ...io });
  let session: Session;
  try {
    const configFile = await findConfig(process.cwd(), configArg).catch((error: unknown) => {
      // No config here: say how to make one too.
      const names = Object.keys(starters);
      if (configArg !== undefined || names.length === 0 || !isFailure(error, 'usage')) throw error;
      throw new Failure('usage', `${error.message}, or start one here: ${names.map((name) => `pipeline ${name}`).join(', ')}`);
    });
    session = await Session.open(configFile);
  } catch (error) {
    if (argv.includes('--help') || argv.includes('-h')) {
      io.out(helpText(undefined, await starterUsages(starters)));
      io.err(`pipeline: ${(error as Error).message}`);
      return EXIT_OK;
    }
    throw error;
  }
  context.session = session;
  const configCommand = word === undefined || isBuiltin(word) ? undefined : configCommandNamed(session, word);
  if (configCommand) return runConfigCommand(session, configCommand, argv.slice(argv.indexOf(word!) + 1), io, signal);

  const request = parseRequest(session, argv, io, signal);
  if (request.values.help) {
    io.out(helpText(session, await starterUsages(starters)));
    return EXIT_OK;
  }
  if (request.values.verbose === true && request.values.quiet === true) throw new Failure('usage', '--verbose and --quiet contradict each other: give one');
  const [name, ...rest] = request.words;
  const builtin = name !== undefined && isBuiltin(name) ? BUILTINS[name] : undefined;
  const dryRun = request.values['dry-run'] === true;
  if (request.values.profile !== undefined && (builtin || dryRun)) {
    throw new Failure('usage', `--profile records a run; ${builtin ? name : '--dry-run'} runs nothing`);
  }
  if (builtin) return builtin({ ...request, words: rest });
  return dryRun ? dryRunCommand(request) : runCommand(request);
}

/** The command line of a built-in command or a run, parsed against the config's flags. */
interface Request {
  readonly session: Session;
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
  /** The words after the options: a run's targets, or a built-in command and its arguments. */
  readonly words: readonly string[];
  readonly settings: RunSettings;
  readonly json: boolean;
  readonly io: Output;
}

function parseRequest(session: Session, argv: readonly string[], io: Output, signal: AbortSignal): Request {
  const flagNames = Object.keys(session.config.flags ?? {});
  const options: OptionSpecs = { ...RUN_OPTIONS };
  for (const name of flagNames) options[name] = { type: 'boolean' };
  const parsed = parseCommandLine(argv, options);
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const settings: RunSettings = {
    force: values.force === true,
    keepGoing: values['keep-going'] === true,
    jobs: parseJobs(values.jobs as string | undefined),
    wait: values['no-wait'] !== true,
    flags: Object.fromEntries(flagNames.map((name) => [camelCase(name), values[name] === true])),
    signal,
  };
  return { session, values, words: parsed.positionals, settings, json: values.json === true, io };
}

/**
 * The commands the engine itself has, by the first word. Any other first word is a target
 * (or a config's command, looked up before these). inspect.ts (these and --dry-run) and
 * the --profile trace load only when asked for: a no-op run's time is mostly start-up.
 */
const BUILTINS = {
  async explain({ session, words, settings, json, io }: Request): Promise<number> {
    if (words.length !== 1) throw new Failure('usage', 'explain takes one target: pipeline explain <target>');
    const { explainTarget } = await import('./inspect.ts');
    return explainTarget(session, words[0]!, settings, json, io.out);
  },
  async graph({ session, words, values, io }: Request): Promise<number> {
    const format = (values.format as string | undefined) ?? 'mermaid';
    if (format !== 'mermaid' && format !== 'dot') throw new Failure('usage', `--format must be mermaid or dot, not "${format}"`);
    const graph = session.graphFor(words);
    // No targets: the whole graph; targets: what they select and everything they need.
    const ids = words.length === 0 ? [...graph.nodes.keys()] : graph.closure(graph.resolveTargets(words, session.familyUsages()));
    const { describeGraph } = await import('./inspect.ts');
    io.out(describeGraph(graph, ids, format));
    return EXIT_OK;
  },
  async plan({ session, words, settings, json, io }: Request): Promise<number> {
    const { printPlan } = await import('./inspect.ts');
    return printPlan({ session, targets: targetsOrDefault(session, words), settings, json, out: io.out });
  },
} satisfies Record<string, (request: Request) => Promise<number>>;

function isBuiltin(word: string): word is keyof typeof BUILTINS {
  return Object.hasOwn(BUILTINS, word);
}

async function dryRunCommand({ session, words, settings, json, io }: Request): Promise<number> {
  const { printDryRun } = await import('./inspect.ts');
  return printDryRun({ session, targets: targetsOrDefault(session, words), settings, json, out: io.out });
}

/** Runs the targets (the config's default when none is given) with the chosen views. */
async function runCommand({ session, words, values, settings, json, io }: Request): Promise<number> {
  const targets = targetsOrDefault(session, words);
  const graph = session.graphFor(targets);
  const reporters = [await chooseView({ json, verbose: values.verbose === true, quiet: values.quiet === true }, io)];
  const profile = values.profile as string | undefined;
  // The trace before the JSON summary: a trace that cannot be written is then the one
  // JSON object's error, never an "ok" followed by a failure.
  if (profile !== undefined) {
    const poolOf = (id: NodeId): string | undefined => graph.nodes.get(id)?.pool;
    const { ProfileReporter } = await import('./report/profile.ts');
    reporters.push(await ProfileReporter.open(profile, resolve(profile), `pipeline ${targets.join(' ')}`, poolOf));
  }
  if (json) reporters.push(new JsonReporter(io.out));
  const reporter = reporters.length === 1 ? reporters[0]! : fanOut(reporters);
  let results: Awaited<ReturnType<typeof session.run>>;
  try {
    results = await session.run(targets, settings, reporter, {
      onWait: (who) => io.err(`pipeline: waiting for another pipeline in this tree to finish (${who})`),
      onTakeover: (what) => io.err(`pipeline: took over ${what}`),
    });
  } catch (error) {
    await reporter.abandon?.();
    throw error;
  }
  if (results.some((result) => result.status === 'cancelled') || settings.signal.aborted) return EXIT_INTERRUPTED;
  return results.some((result) => result.status === 'failed' || result.status === 'skipped') ? EXIT_FAILED : EXIT_OK;
}

/** The targets given, or the config's default target when none is. */
function targetsOrDefault(session: Session, words: readonly string[]): readonly string[] {
  if (words.length > 0) return words;
  const fallback = session.config.defaultTarget;
  if (!fallback) throw new Failure('usage', `no target given; try one of: ${session.graphFor([]).targetNames().join(', ')}`);
  return [fallback];
}

/** The config's command of that name (`release`, `images`), if it has one. */
function configCommandNamed(session: Session, word: string): Command | undefined {
  const commands = session.config.commands;
  return commands && Object.hasOwn(commands, word) ? commands[word] : undefined;
}

async function runConfigCommand(session: Session, command: Command, args: string[], io: Output, signal: AbortSignal): Promise<number> {
  const options: OptionSpecs = {
    ...(command.options ?? {}),
    config: { type: 'string', short: 'c' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  };
  const parsed = parseCommandLine(args, options, `pipeline ${command.usage.split(' ')[0]} --help`);
  if (parsed.values.help) {
    io.out(`usage: pipeline ${command.usage}\n\n${command.description}`);
    return EXIT_OK;
  }
  const json = parsed.values.json === true;
  const meters = new Map<string, { meter: ProgressMeter; printedAt: number }>();
  const commandIO: CommandIO = {
    root: session.root,
    signal,
    json,
    hasher: session.hasher,
    out: io.out,
    err: io.err,
    progress(label, done, total) {
      // Commands print throttled progress lines (speed, ETA); the tree is for graph runs.
      let state = meters.get(label);
      if (!state) meters.set(label, (state = { meter: new ProgressMeter(), printedAt: 0 }));
      state.meter.update(done, total);
      const now = Date.now();
      if (json || (now - state.printedAt < 2_000 && done !== total)) return;
      state.printedAt = now;
      io.err(`  ${label}: ${state.meter.describe(false)}`);
    },
  };
  try {
    return await command.run({ values: parsed.values as Record<string, string | boolean | string[] | undefined>, positionals: parsed.positionals }, commandIO);
  } finally {
    await session.hasher.save();
  }
}

/**
 * What the user watches: the live tree on a terminal, else plain lines on stderr (always
 * under --json, whose stdout is the summary; and for --verbose and --quiet).
 */
async function chooseView(options: { json?: boolean; verbose?: boolean; quiet?: boolean }, io: Output): Promise<Reporter> {
  // listr2 draws on stdout; a terminal without a width (some PTYs) cannot show a tree.
  const interactive = process.stdout.isTTY === true && (process.stdout.columns ?? 0) > 0 && !process.env.CI;
  if (!interactive || options.json || options.verbose || options.quiet) {
    return new PlainReporter(io.err, { verbose: options.verbose === true, quiet: options.quiet === true });
  }
  // Loaded only for a terminal, so CI and --json runs skip listr2's start-up.
  const { TreeReporter } = await import('./report/tree.ts');
  return new TreeReporter(io.err, process.stdout);
}

/** The command an error under --json belongs to: `run`, `dry-run`, `plan`, `release-check`… */
function commandName(argv: readonly string[], session: Session | undefined): string {
  const word = firstWord(argv);
  if (word !== undefined && isBuiltin(word)) return word;
  const command = word === undefined || session === undefined ? undefined : configCommandNamed(session, word);
  if (command) {
    const sub = firstWord(argv.slice(argv.indexOf(word!) + 1));
    return sub !== undefined && command.subcommands?.includes(sub) ? `${word}-${sub}` : word!;
  }
  return argv.includes('--dry-run') || argv.includes('-n') ? 'dry-run' : 'run';
}

function parseJobs(value: string | undefined): number {
  if (value === undefined) return 0;
  const jobs = Number(value);
  if (!Number.isInteger(jobs) || jobs < 1) throw new Failure('usage', `--jobs must be a positive integer, not "${value}"`);
  return jobs;
}

/** The first argument that is neither an option nor the value of one. */
function firstWord(argv: readonly string[]): string | undefined {
  const takesValue = optionsTakingValues(RUN_OPTIONS);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (takesValue.has(arg)) i++;
    else if (!arg.startsWith('-')) return arg;
  }
  return undefined;
}

function findConfigArgument(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--config' || arg === '-c') return argv[i + 1];
    if (arg.startsWith('--config=')) return arg.slice('--config='.length);
  }
  return process.env.PIPELINE_CONFIG;
}

function camelCase(name: string): string {
  return name.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
}

function packageVersion(): string {
  // This file runs compiled from dist/src/ (the CLI) or as source from src/ (tests).
  const where = import.meta.url.includes('/dist/src/') ? '../../package.json' : '../package.json';
  const pkg = JSON.parse(readFileSync(new URL(where, import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function helpText(session: Session | undefined, starterUsageLines: readonly string[]): string {
  const lines = [
    'usage: pipeline [targets…] [options]',
    '       pipeline explain <target> [--json]',
    '       pipeline graph [--format mermaid|dot] [targets…]',
    '       pipeline plan [--json] [targets…]',
  ];
  for (const usage of starterUsageLines) lines.push(`       pipeline ${usage}`);
  for (const command of Object.values(session?.config.commands ?? {})) lines.push(`       pipeline ${command.usage}`);
  lines.push(
    '',
    'Runs the targets and everything they depend on, skipping what is fresh.',
    '',
    'options:',
    '  --force              re-run the selected targets and what they depend on, whatever the cache says',
    '  -n, --dry-run        say what would run and why; change nothing',
    '  -j, --jobs N         run at most N tasks at once (default: CPU count)',
    '  -k, --keep-going     after a failure, go on with what does not depend on it',
    '  -c, --config FILE    config file (default: ./pipeline.config.ts)',
    '  --json               print one JSON object on stdout (schema/pipeline-output.v1.schema.json)',
    '  -v, --verbose        plain lines, with every line the tasks log',
    '  -q, --quiet          print only failures and the summary',
    '  --profile FILE       write the run as Chrome trace events (Perfetto, chrome://tracing)',
    '  --no-wait            fail instead of waiting when another pipeline holds this tree',
    '  -h, --help           this help, with the targets of the loaded config',
    '  -V, --version        the version',
  );
  for (const [name, flag] of Object.entries(session?.config.flags ?? {})) lines.push(`  --${name.padEnd(19)}${flag.description}`);
  lines.push('', 'exit codes: 0 success, 1 a task failed, 2 usage or config error, 130 interrupted');
  if (session) {
    lines.push('', `targets (${session.configFile}):`);
    const graph = session.graphFor([]);
    for (const name of graph.targetNames()) {
      const node = graph.nodes.get(name);
      const alias = graph.aliases[name];
      const what = node ? (node.description ?? node.kind) : `= ${alias!.join(' ')}`;
      lines.push(`  ${name.padEnd(24)}${what}`);
    }
    for (const family of Object.values(session.config.families ?? {})) lines.push(`  ${family.usage.padEnd(24)}${family.description}`);
  }
  return lines.join('\n');
}
