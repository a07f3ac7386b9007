// Command-line flags to values, with one-line errors in our words: node:util's parseArgs
// reads the tokens, and each problem it would have thrown (in prose meant for another
// tool's users) is said here by name, with the nearest flag when it is a typo.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { Failure } from './failure.ts';
import { nearest } from './suggest.ts';

export type OptionSpecs = NonNullable<ParseArgsConfig['options']>;

export interface ParsedArgs {
  readonly values: Record<string, string | boolean | string[] | undefined>;
  readonly positionals: string[];
}

/** Parses `args` against `options`; a bad flag is a `usage` Failure naming it (exit 2). */
export function parseCommandLine(args: readonly string[], options: OptionSpecs, help = 'pipeline --help'): ParsedArgs {
  const { values, positionals, tokens } = parseArgs({ args: [...args], options, allowPositionals: true, strict: false, tokens: true });
  for (const token of tokens) {
    if (token.kind !== 'option') continue;
    const spec = options[token.name];
    if (!spec) {
      const names = Object.keys(options).map((name) => `--${name}`);
      const hint = nearest(token.rawName.startsWith('--') ? token.rawName : `--${token.name}`, names);
      throw new Failure('usage', `unknown flag ${token.rawName}${hint ? ` (did you mean ${hint}?)` : ''}; see ${help}`);
    }
    const flag = `--${token.name}`;
    if (spec.type === 'boolean' && token.value !== undefined) throw new Failure('usage', `${flag} takes no value (got "${token.value}")`);
    if (spec.type === 'string') {
      if (token.value === undefined) throw new Failure('usage', `${flag} needs a value; see ${help}`);
      // `--jobs -3`: parseArgs takes the next word, but a value that looks like a flag is
      // more likely a forgotten one.
      if (!token.inlineValue && token.value.startsWith('-')) {
        throw new Failure('usage', `${flag} needs a value, not "${token.value}" (write ${flag}=${token.value} if that is the value)`);
      }
    }
  }
  return { values: values as ParsedArgs['values'], positionals };
}

/** Names (long and short, with dashes) of the options that take a value. */
export function optionsTakingValues(options: OptionSpecs): Set<string> {
  const names = new Set<string>();
  for (const [name, spec] of Object.entries(options)) {
    if (spec.type !== 'string') continue;
    names.add(`--${name}`);
    if (spec.short) names.add(`-${spec.short}`);
  }
  return names;
}
