// A reason (src/reason.ts) in words, as every view and `--json`'s `reason` say it.
import type { Reason, ReasonCode } from '../reason.ts';

type Wording = { readonly [Code in ReasonCode]: (reason: Extract<Reason, { code: Code }>) => string };

const WORDING: Wording = {
  'up-to-date': () => 'up to date',
  'dependencies-unchanged': () => 'dependencies rebuilt with identical output',
  adopted: ({ keyFile, says, remote }) =>
    `adopted: ${[keyFile !== undefined ? `${keyFile} matches` : undefined, says].filter((part) => part !== undefined).join(', ')}` +
    (remote !== undefined ? ` (${remote} has the same key)` : ''),
  'key-matches-remote': ({ keyFile, source }) => `${keyFile} matches ${source}`,
  forced: () => 'forced (--force)',
  'never-built': () => 'never built',
  'not-adopted': ({ says }) => says,
  'outputs-unchecked': () => 'its outputs could not be checked',
  'key-file-missing': ({ path }) => `${path} missing`,
  'key-file-corrupt': ({ path }) => `${path} corrupt`,
  'key-file-mismatch': ({ path }) => `${path} does not match the inputs (inputs changed)`,
  'kind-changed': ({ from, to }) => `task kind changed (${from} -> ${to})`,
  'params-changed': () => 'parameters changed',
  'input-added': ({ path }) => `input ${path} added`,
  'input-changed': ({ path }) => `input ${path} changed`,
  'input-removed': ({ path }) => `input ${path} removed`,
  'env-changed': ({ name }) => `environment ${name} changed`,
  'dependency-changed': ({ id }) => `dependency ${id} changed its output`,
  'upstream-changed': ({ note }) => note ?? 'upstream changed',
  'fingerprint-changed': () => 'fingerprint changed',
  'output-missing': ({ path }) => `output ${path} missing`,
  'output-modified': ({ path }) => `output ${path} was modified`,
  'remote-hit': ({ says }) => says,
  'probe-failed': ({ message }) => `upstream check failed: ${message}`,
  'waiting-on': ({ deps }) => `depends on what ${listed(deps)} produce${deps.length === 1 ? 's' : ''}`,
  'dependency-failed': ({ id }) => `dependency ${id} failed`,
  'dependency-skipped': ({ id }) => `dependency ${id} was skipped`,
  'dependency-cancelled': ({ id }) => `dependency ${id} was cancelled`,
  'earlier-failure': () => 'an earlier node failed',
  interrupted: () => 'interrupted',
  'assess-failed': () => 'could not be assessed',
};

export function reasonText(reason: Reason): string {
  return (WORDING[reason.code] as (reason: Reason) => string)(reason);
}

/** `a`, `a and b`, `a, b and c`. */
function listed(items: readonly string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`;
}
