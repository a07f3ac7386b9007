// Reasons are values (src/reason.ts); src/report/reason-text.ts says them in words. These
// are the rendering tests: elsewhere tests compare codes. The JSON schema lists the same
// codes with the same data.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REASON_CODES, type Reason, type ReasonCode } from '../../src/reason.ts';
import { reasonText } from '../../src/report/reason-text.ts';

// Fails to compile when the union has a code the list lacks (`satisfies` holds the converse).
const everyCodeListed: Exclude<ReasonCode, (typeof REASON_CODES)[number]> extends never ? true : false = true;

test('every code is listed once, and the JSON schema describes exactly those codes', (t) => {
  t.true(everyCodeListed);
  t.is(new Set(REASON_CODES).size, REASON_CODES.length);
  const schema = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'schema', 'pipeline-output.v1.schema.json'), 'utf8')) as {
    $defs: { reason: { oneOf: Array<{ properties: { code: { enum?: string[]; const?: string } } }> } };
  };
  const inSchema = schema.$defs.reason.oneOf.flatMap((variant) => variant.properties.code.enum ?? [variant.properties.code.const!]);
  t.deepEqual([...inSchema].sort(), [...REASON_CODES].sort());
});

test('reasons in words, as views and --json say them', (t) => {
  const said: Array<[Reason, string]> = [
    [{ code: 'up-to-date' }, 'up to date'],
    [{ code: 'input-changed', path: 'a.txt' }, 'input a.txt changed'],
    [{ code: 'waiting-on', deps: ['upper'] }, 'depends on what upper produces'],
    [{ code: 'waiting-on', deps: ['a', 'b', 'c'] }, 'depends on what a, b and c produce'],
    [
      { code: 'adopted', keyFile: 'images/x/.cache-key', says: 'x.qcow2 matches its .sha256' },
      'adopted: images/x/.cache-key matches, x.qcow2 matches its .sha256',
    ],
    [{ code: 'adopted', says: 'it matches', remote: 'release latest' }, 'adopted: it matches (release latest has the same key)'],
    [{ code: 'upstream-changed' }, 'upstream changed'],
    [{ code: 'upstream-changed', note: 'upstream unreachable; using the cached file' }, 'upstream unreachable; using the cached file'],
    [{ code: 'kind-changed', from: 'a', to: 'b' }, 'task kind changed (a -> b)'],
    [{ code: 'dependency-failed', id: 'bad' }, 'dependency bad failed'],
    [{ code: 'dependency-skipped', id: 'x' }, 'dependency x was skipped'],
    [{ code: 'forced' }, 'forced (--force)'],
  ];
  for (const [reason, text] of said) t.is(reasonText(reason), text, reason.code);
});
