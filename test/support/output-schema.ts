// The JSON contract's schema, compiled once, for tests that check a command's --json output.
import { Ajv2020 } from 'ajv/dist/2020.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './engine-project.ts';

export const outputSchema = JSON.parse(readFileSync(join(REPO, 'schema', 'pipeline-output.v1.schema.json'), 'utf8')) as {
  $defs: { failureKind: { enum: string[] }; status: { enum: string[] } };
};

// Strict, so a mistake in the schema fails the tests; `required` may name properties that
// a `$ref`'d definition declares.
export const validateOutput = new Ajv2020({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true }).compile(outputSchema);

/** Why `output` does not fit the schema, for an assertion's message. */
export function schemaErrors(output: unknown): string {
  return `${JSON.stringify(validateOutput.errors, null, 2)}\n${JSON.stringify(output)}`;
}
