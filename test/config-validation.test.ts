// Config mistakes a user makes, through the real CLI: each is exit 2 with exactly one
// line on stderr that names the file, the key's path and what to write instead.
import test, { type ExecutionContext } from 'ava';
import { makeProject, PACKAGE_ENTRY, type CliResult } from './support/engine-project.ts';

const IMAGE_CONFIG = (extra: string): string => `import { defineConfig } from ${JSON.stringify(PACKAGE_ENTRY)};
export default defineConfig({
  bases: { bookworm: { url: 'file:///nowhere/debian-12.qcow2', checksumsUrl: 'file:///nowhere/SHA512SUMS' } },
  images: { 'debian-12': { base: 'bookworm' } },
  ${extra}
});
`;

/** Runs `pipeline graph` (loads the config, starts nothing) on the config and checks the one-line exit 2. */
async function configError(t: ExecutionContext, config: string, configName = 'pipeline.config.ts', files: Record<string, string> = {}): Promise<string> {
  const project = await makeProject(t, { config, configName, files });
  const run: CliResult = await project.run(['graph']);
  t.is(run.code, 2, run.stderr);
  const lines = run.stderr.trimEnd().split('\n');
  t.is(lines.length, 1, run.stderr);
  t.true(lines[0]!.startsWith(`pipeline: ${project.path(configName)}: `) || /^pipeline: \S+:\d+:\d+: /.test(lines[0]!), lines[0]);
  t.is(run.stdout, '');
  return lines[0]!;
}

test('an unknown top-level key is an error with the nearest known key', async (t) => {
  const line = await configError(t, IMAGE_CONFIG("publishdir: '/srv/iso',"));
  t.regex(line, /pipeline\.config\.ts: publishdir: unknown key \(did you mean publishDir\?\)$/);
});

test('a misspelt required key is named as unknown, with the key it misses, not reported missing', async (t) => {
  const imagse = IMAGE_CONFIG('').replace('images:', 'imagse:');
  t.regex(await configError(t, imagse), /pipeline\.config\.ts: imagse: unknown key \(did you mean images\?\)$/);
  const stpes = `import { defineStepsConfig } from '@engine';
export default defineStepsConfig({ stpes: { a: { command: ['true'] } } });
`;
  t.regex(await configError(t, stpes), /pipeline\.config\.ts: stpes: unknown key \(did you mean steps\?\)$/);
  // Missing with no misspelling beside it: still "missing".
  const missing = IMAGE_CONFIG('').replace("images: { 'debian-12': { base: 'bookworm' } },", '');
  t.regex(await configError(t, missing), /pipeline\.config\.ts: images: missing \(expected an object\)$/);
});

test('unknown keys are errors at every level, with their path', async (t) => {
  t.regex(await configError(t, IMAGE_CONFIG("release: { tga: 'v1' },")), /: release\.tga: unknown key \(did you mean tag\?\)$/);
  t.regex(await configError(t, IMAGE_CONFIG("steps: { notes: { comand: ['true'] } },")), /: steps\.notes\.comand: unknown key \(did you mean command\?\)$/);
  // Nothing close: the known keys are listed instead.
  t.regex(await configError(t, IMAGE_CONFIG('colour: true,')), /: colour: unknown key \(known keys: bases, images, steps, publishDir, .*\)$/);
});

test('an unknown key inside an image or a base names the image', async (t) => {
  const config = IMAGE_CONFIG('').replace("'debian-12': { base: 'bookworm' }", "'debian-12': { base: 'bookworm', acelerator: 'tcg' }");
  t.regex(await configError(t, config), /: images\.debian-12\.acelerator: unknown key \(did you mean accelerator\?\)$/);
});

test('a wrong type names the key and the expected type, without a stack', async (t) => {
  const line = await configError(t, IMAGE_CONFIG('publishDir: 42,'));
  t.regex(line, /pipeline\.config\.ts: publishDir: expected a string, not 42$/);
  t.regex(await configError(t, IMAGE_CONFIG('release: { tag: 5 },')), /: release\.tag: expected a string, not 5$/);
  t.regex(await configError(t, IMAGE_CONFIG('pools: { packer: 0 },')), /: pools\.packer: expected a positive number, not 0$/);
  const list = IMAGE_CONFIG('').replace("images: { 'debian-12': { base: 'bookworm' } },", "images: ['debian-12'],");
  t.regex(await configError(t, list), /: images: expected an object, not an array$/);
});

test('a release tag with a space is refused before any request, as the target upload:{tag} is', async (t) => {
  const line = await configError(t, IMAGE_CONFIG("release: { tag: 'my tag' },"));
  t.regex(line, /release\.tag.*"my tag" is not a valid release tag/);
});

test("a release repository that is not owner/name is refused with the CLI's rule", async (t) => {
  t.regex(await configError(t, IMAGE_CONFIG("release: { repo: 'acme/../images' },")), /release\.repo.*"acme\/\.\.\/images" is not a GitHub repository/);
  t.regex(await configError(t, IMAGE_CONFIG("release: { repo: '../x' },")), /release\.repo.*"\.\.\/x" is not a GitHub repository/);
});

test('release settings that name two stores are refused in one line naming both keys', async (t) => {
  t.regex(
    await configError(t, IMAGE_CONFIG("release: { dir: '/srv/images', repo: 'acme/images' },")),
    /: release: repo and dir name different stores \(github, directory\); keep one$/,
  );
});

test('a generic-steps config is checked the same way', async (t) => {
  const config = `import { defineStepsConfig } from '@engine';
export default defineStepsConfig({ steps: { a: { command: ['true'], outptus: ['a.txt'] } } });
`;
  t.regex(await configError(t, config), /: steps\.a\.outptus: unknown key \(did you mean outputs\?\)$/);
  const js = `import { defineStepsConfig } from '@engine';
export default defineStepsConfig({ steps: { a: { command: 'true' } } });
`;
  t.regex(await configError(t, js, 'pipeline.config.mjs'), /pipeline\.config\.mjs: steps\.a\.command: expected an array, not "true"$/);
});

// A declaration the hand check cannot vouch for (here steps made by a class) is checked
// with zod when the file loads, not when defineStepsConfig runs: the same one-line errors,
// through a spread and a factory too, and a valid one runs.
const CLASS_STEPS = `import { defineStepsConfig } from '@engine';
class Step { constructor(fields) { Object.assign(this, fields); } }
`;

test('an unusual generic-steps declaration gets the same errors when the file loads', async (t) => {
  const typo = `${CLASS_STEPS}export default defineStepsConfig({ steps: { a: new Step({ command: ['true'], outptus: ['a.txt'] }) } });\n`;
  t.regex(await configError(t, typo, 'pipeline.config.mjs'), /pipeline\.config\.mjs: steps\.a\.outptus: unknown key \(did you mean outputs\?\)$/);
  const spread = `${CLASS_STEPS}export default { ...defineStepsConfig({ steps: { a: new Step({ command: 'true' }) } }), pools: { x: 1 } };\n`;
  t.regex(await configError(t, spread, 'pipeline.config.mjs'), /: steps\.a\.command: expected an array, not "true"$/);
  const factory = `${CLASS_STEPS}export default () => defineStepsConfig({ steps: { a: new Step({ outputs: ['a.txt'] }) } });\n`;
  t.regex(await configError(t, factory, 'pipeline.config.mjs'), /: step "a" needs exactly one of command or run$/);
});

test('an unusual generic-steps declaration that is valid builds and runs', async (t) => {
  const config = `${CLASS_STEPS}export default defineStepsConfig({ steps: { a: new Step({ command: ['sh', '-c', 'echo made > a.txt'], outputs: ['a.txt'] }) } });\n`;
  const project = await makeProject(t, { config, configName: 'pipeline.config.mjs' });
  const run = await project.run(['a']);
  t.is(run.code, 0, run.stderr);
  t.is(await project.read('a.txt'), 'made\n');
});

test('a syntax error names file:line:column, in a TypeScript or JavaScript config or a file it imports', async (t) => {
  const broken = 'export default {\n  nodes: [\n    x y\n  ],\n};\n';
  t.regex(await configError(t, broken, 'pipeline.config.ts'), /pipeline\.config\.ts:3:7: Expected "\]" but found "y"$/);
  t.regex(await configError(t, broken, 'pipeline.config.mjs'), /pipeline\.config\.mjs:3:7: Expected "\]" but found "y"$/);
  // An imported TypeScript helper loads through tsx, a JavaScript one through Node: both
  // report the helper's own position.
  const helper = 'export const x = {\n  a: 1 2,\n};\n';
  const importing = (file: string): string => `import { x } from './${file}';\nexport default { nodes: [], x };\n`;
  t.regex(await configError(t, importing('helper.ts'), 'pipeline.config.ts', { 'helper.ts': helper }), /\/helper\.ts:2:8: Expected "\}" but found "2"$/);
  t.regex(await configError(t, importing('helper.mjs'), 'pipeline.config.mjs', { 'helper.mjs': helper }), /\/helper\.mjs:2:8: Expected "\}" but found "2"$/);
});

test('a valid config with every key still loads', async (t) => {
  const project = await makeProject(t, {
    config: IMAGE_CONFIG(`publishDir: '/srv/iso',
  templatesDir: 'templates',
  sharedDir: 'shared',
  accelerator: 'tcg',
  compression: 'zlib',
  release: { repo: 'acme/images', apiUrl: 'http://127.0.0.1:9', tag: 'v2025.01', maxAssetSize: 1000000, partSize: 500000 },
  pools: { packer: 2, network: 1 },
  steps: { notes: { description: 'notes', deps: ['debian-12:build'], command: ['true'], outputs: ['notes.txt'], env: ['X'], pool: 'network' } },`),
  });
  const run = await project.run(['graph']);
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /debian-12:build/);
});
