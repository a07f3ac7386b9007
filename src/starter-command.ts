// Commands that run where there is no config yet: `pipeline init`, which makes one. The
// engine knows none of them by name; the package's bin passes them to `main`, each loaded
// only when it runs or `--help` lists it.
import { parseCommandLine } from './args.ts';
import type { CommandOptions } from './types.ts';

export interface StarterIO {
  /** The directory the command works in (the process's working directory). */
  readonly cwd: string;
  /** A line for the user on stdout. */
  out(line: string): void;
  /** A line for the user on stderr. */
  err(line: string): void;
}

export interface StarterCommand {
  /** One line: `init [images…]`. */
  readonly usage: string;
  readonly description: string;
  readonly options?: CommandOptions;
  run(args: { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] }, io: StarterIO): Promise<number>;
}

/** Starter commands by name, each a loader. */
export type StarterCommands = Readonly<Record<string, () => Promise<StarterCommand>>>;

/** Parses `args` for the command (its own flags and `--help`) and runs it. */
export async function runStarter(load: () => Promise<StarterCommand>, args: readonly string[], io: StarterIO): Promise<number> {
  const command = await load();
  const name = command.usage.split(' ')[0]!;
  const parsed = parseCommandLine(args, { ...(command.options ?? {}), help: { type: 'boolean', short: 'h' } }, `pipeline ${name} --help`);
  if (parsed.values.help) {
    io.out(`usage: pipeline ${command.usage}\n\n${command.description}`);
    return 0;
  }
  return command.run({ values: parsed.values, positionals: parsed.positionals }, io);
}

/** Their usage lines, for `pipeline --help`. */
export async function starterUsages(commands: StarterCommands): Promise<string[]> {
  return Promise.all(Object.values(commands).map(async (load) => (await load()).usage));
}
