// The hostile-store property: generated store contents (records with crafted fields, path
// tricks, FIFOs, huge files, invalid JSON, images that read host files or are not sound
// qcow2), planted over an honest store, then every command a consumer or a writer runs
// against it, as real processes. For every case:
//
// - no crash and no hang: each command ends within its bound with an exit code the
//   README defines for it, and its errors are lines of the tool's (no stack, no raw error);
// - nothing outside the store and the target directories is written or deleted (the
//   host's fingerprint is unchanged);
// - no byte of the host's secret file is in anything written (downloads, published
//   images, the fresh host's tree, the store itself);
// - what was downloaded or published is a sound, self-contained image.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { selfContainedProblem } from '../../tasks/image-check.ts';
import { type CliResult, startCli } from './engine-project.ts';
import { HOSTILE_IMAGE_KINDS, type HostileImageKind, makeGoodQcow2, makeHostileImage } from './hostile-images.ts';
import { type Host, type OddEntry, type StoreUnderTest, TAG } from './hostile-store.ts';
import { IMAGES, type ImageProject, makeShellBuiltTree } from './image-project.ts';
import { validateOutput } from './output-schema.ts';

/** Image names a case may plant: the three the config declares, and one it does not. */
const NAMES = [...IMAGES, 'evil'] as const;
type Name = (typeof NAMES)[number];

/** A field of a record set to a value a writer chose (a path into the record file or doc). */
interface Crafted {
  readonly path: readonly string[];
  readonly value: unknown;
}

export type Plant =
  | { readonly kind: 'image'; readonly name: Name; readonly image: HostileImageKind | 'good'; readonly crafted?: Crafted }
  | { readonly kind: 'odd'; readonly entry: OddEntry };

const CRAFTED: readonly Crafted[] = [
  { path: ['image', 'parts', '0', 'name'], value: '../../etc/passwd' },
  { path: ['image', 'parts', '0', 'name'], value: '/etc/shadow' },
  { path: ['blob'], value: '../../../etc/passwd' },
  { path: ['blob'], value: `../${'0'.repeat(64)}.qcow2` },
  { path: ['assets', '0', 'name'], value: '../../debian-13.qcow2' },
  { path: ['assets', '0', 'name'], value: 'debian-13.qcow2' },
  { path: ['name'], value: '../evil' },
  { path: ['image', 'cacheKey'], value: 'key\nEVIL=1' },
  { path: ['image', 'versions', 'DEBIAN_VERSION'], value: '12\nPWNED=1' },
  { path: ['image', 'versions', '../x'], value: '1' },
  { path: ['image', 'sources', 'base', 'path'], value: '/etc/shadow' },
  { path: ['image', 'sources', 'files'], value: { '../../etc/passwd': 'x\u001b[31m' } },
  { path: ['image', 'size'], value: -1 },
  { path: ['image', 'size'], value: 2 ** 60 },
  { path: ['image', 'sha256'], value: 'A'.repeat(64) },
  { path: ['image', 'parts'], value: [] },
  { path: ['schemaVersion'], value: 2 },
];

function craftedArb(): fc.Arbitrary<Crafted> {
  const random = fc.record({
    path: fc.constantFrom<readonly string[]>(
      ['image', 'cacheKey'],
      ['name'],
      ['blob'],
      ['image', 'uploadedAt'],
      ['image', 'versions', 'V'],
      ['image', 'parts', '0', 'name'],
    ),
    value: fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.jsonValue({ maxDepth: 2 })),
  });
  return fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...CRAFTED) }, { weight: 1, arbitrary: random });
}

export function plantArb(store: Pick<StoreUnderTest, 'supports'>): fc.Arbitrary<Plant> {
  const name = fc.constantFrom(...NAMES);
  const image = fc.record(
    {
      kind: fc.constant('image' as const),
      name,
      image: fc.constantFrom<HostileImageKind | 'good'>(...HOSTILE_IMAGE_KINDS, 'good'),
      crafted: craftedArb(),
    },
    { requiredKeys: ['kind', 'name', 'image'] },
  );
  const odd: fc.Arbitrary<OddEntry> = fc.oneof(
    fc.record({
      kind: fc.constant('record-text' as const),
      name,
      text: fc.oneof(fc.constantFrom('{', '', 'null', '[]', '{"schemaVersion":1}'), fc.string({ maxLength: 80 })),
    }),
    fc.record({ kind: fc.constant('record-huge' as const), name, bytes: fc.constantFrom(5 * 1024 * 1024, 17 * 1024 * 1024) }),
    fc.record({ kind: fc.constantFrom('record-fifo' as const, 'record-dir' as const, 'record-link-out' as const, 'blob-link-out' as const), name }),
    fc.record({
      kind: fc.constantFrom('blobs-link-out' as const, 'blobs-hold-dir' as const, 'index-fifo' as const, 'index-dir' as const, 'tag-link-out' as const),
    }),
    fc.record({ kind: fc.constant('index-text' as const), text: fc.constantFrom('{', '{"schemaVersion":1,"images":{"../x":{}}}', 'x'.repeat(100)) }),
    fc.record({
      kind: fc.constant('odd-name' as const),
      name: fc.constantFrom('../debian-12.qcow2', '/etc/debian-12.qcow2', 'debian-12.qcow2.part..', '..', 'Debian-12.qcow2.json'),
      bytes: fc.constant(Buffer.from('odd\n')),
    }),
    fc.record({ kind: fc.constantFrom('marker-only' as const, 'foreign-manifest' as const), name }),
  );
  return fc.oneof(
    { weight: 3, arbitrary: image },
    { weight: 2, arbitrary: odd.filter((entry) => store.supports(entry.kind)).map((entry) => ({ kind: 'odd' as const, entry })) },
  );
}

/** The finding, run first in every run: a declared image replaced by a qcow2 backed by a host file, with a record that says it is current. */
export const FINDING: Plant[] = [{ kind: 'image', name: 'debian-12', image: 'backing-file' }];

export function caseArb(store: Pick<StoreUnderTest, 'supports'>): fc.Arbitrary<Plant[]> {
  return fc.array(plantArb(store), { minLength: 1, maxLength: 4 });
}

/** How a case is printed in a failure: the plants, without the big buffers. */
export function describeCase(plants: readonly Plant[]): string {
  return JSON.stringify(
    plants.map((plant) => (plant.kind === 'odd' && plant.entry.kind === 'odd-name' ? { ...plant, entry: { ...plant.entry, bytes: '…' } } : plant)),
  );
}

/** The world the cases run in: a host, a store with an honest upload, a build host that made it, a fresh host. */
export interface PropertyWorld {
  readonly host: Host;
  readonly store: StoreUnderTest;
  readonly build: ImageProject;
  readonly honest: unknown;
  /** A pristine fresh host (config and templates, nothing built), copied for each case. */
  readonly freshTemplate: string;
  /** PATH with a packer that answers `version` and fails every build, so a refused fetch fails fast instead of building. */
  readonly stubPackerPath: string;
}

export async function makeWorld(host: Host, store: StoreUnderTest, build: ImageProject, cleanups: Array<() => Promise<unknown>>): Promise<PropertyWorld> {
  await makeShellBuiltTree(build);
  // Compressed as a build here compresses them, so that a fresh host fetches them rather than building.
  for (const name of IMAGES) {
    const image = build.path(`images/${name}/${name}.qcow2`);
    execFileSync('qemu-img', ['convert', '-q', '-c', '-f', 'qcow2', '-O', 'qcow2', '-o', 'compression_type=zstd', image, `${image}.zstd`]);
    await rename(`${image}.zstd`, image);
    execFileSync('sh', ['-c', `sha256sum ${name}.qcow2 > ${name}.qcow2.sha256`], { cwd: build.path(`images/${name}`) });
  }
  const uploaded = await startCli(build.root, ['upload:latest', '--offline'], { env: store.env, timeoutMs: 300_000 }).done;
  if (uploaded.code !== 0) throw new Error(`the honest upload failed:\n${uploaded.stderr}`);
  const honest = await store.snapshot();
  const freshTemplate = await mkdtemp(join(tmpdir(), 'pipeline-fresh-'));
  cleanups.push(() => rm(freshTemplate, { recursive: true, force: true }));
  for (const entry of ['pipeline.config.ts', 'package.json', 'templates', 'shared'])
    await cp(build.path(entry), join(freshTemplate, entry), { recursive: true });
  const stubBin = await mkdtemp(join(tmpdir(), 'pipeline-stub-packer-'));
  cleanups.push(() => rm(stubBin, { recursive: true, force: true }));
  await writeFile(join(stubBin, 'packer'), '#!/bin/sh\n[ "$1" = version ] && { echo "Packer v1.6.6"; exit 0; }\necho "no builds on this host" >&2\nexit 1\n');
  await chmod(join(stubBin, 'packer'), 0o755);
  return { host, store, build, honest, freshTemplate, stubPackerPath: `${stubBin}:${process.env.PATH ?? ''}` };
}

/** What one command may exit with, and its bound. */
const COMMAND_TIMEOUT_MS = 90_000;

export interface CaseOutcome {
  /** Broken promises, each a line; empty when the case holds. */
  readonly problems: string[];
  /** Each command's exit code, for the log. */
  readonly exits: Record<string, number | null>;
}

/** Plants `plants` over the honest store, runs every command, and checks the promises. */
export async function runCase(world: PropertyWorld, plants: readonly Plant[], random: () => number): Promise<CaseOutcome> {
  const { store, host, build } = world;
  await store.restore(world.honest);
  const scratch = await mkdtemp(join(tmpdir(), 'pipeline-case-'));
  try {
    const hostBefore = await host.fingerprint();
    const hostile = new Set<string>();
    // Links that turn the store's folders into the host's go last: planted before, the other plants would be written through them.
    const stage = (plant: Plant) => (plant.kind !== 'odd' ? 0 : plant.entry.kind === 'blobs-link-out' ? 1 : plant.entry.kind === 'tag-link-out' ? 2 : 0);
    for (const plant of [...plants].sort((a, b) => stage(a) - stage(b))) {
      if (plant.kind === 'odd') {
        await store.plantOdd(plant.entry);
        continue;
      }
      const path = join(scratch, `planted-${plant.name}-${hostile.size}.img`);
      if (plant.image === 'good') makeGoodQcow2(path, 32 * 1024);
      else await makeHostileImage(plant.image, path, host.secret, random);
      const bytes = await readFile(path);
      if (plant.image !== 'good') hostile.add(bytes.toString('base64'));
      await store.plantImage(plant.name, bytes, (record) => {
        // A writer that wants its image fetched says nothing of a compression the build would not make.
        delete (record.image as Record<string, unknown>).compression;
        if (plant.crafted) setPath(record, plant.crafted.path, plant.crafted.value);
      });
    }
    const unreadable = plants.some((plant) => plant.kind === 'odd' && plant.entry.kind === 'tag-link-out');
    const problems: string[] = [];
    const exits: Record<string, number | null> = {};
    const env = store.env;
    const downloads = join(scratch, 'downloads');
    const publish = join(scratch, 'publish');
    await mkdir(publish);
    const fresh = join(scratch, 'fresh-host');
    await cp(world.freshTemplate, fresh, { recursive: true });
    const freshPublish = join(fresh, 'publish');
    await mkdir(freshPublish, { recursive: true });

    const command = async (
      label: string,
      cwd: string,
      args: readonly string[],
      allowed: readonly number[],
      extraEnv: Record<string, string> = {},
    ): Promise<CliResult | undefined> => {
      let result: CliResult;
      try {
        result = await startCli(cwd, args, { env: { ...env, ...extraEnv }, timeoutMs: COMMAND_TIMEOUT_MS }).done;
      } catch (error) {
        problems.push(`${label}: ${(error as Error).message.split('\n')[0]}`);
        return undefined;
      }
      exits[label] = result.code;
      if (result.code === null || !allowed.includes(result.code))
        problems.push(`${label}: exit ${result.code ?? result.signal} (allowed ${allowed.join(', ')})\n${result.stderr}`);
      const raw = /\n\s+at |\b(SyntaxError|TypeError|RangeError|ReferenceError)\b|\bE[A-Z]{3,}: [a-z]/.exec(result.stderr);
      if (raw) problems.push(`${label}: a raw error or stack (${raw[0].trim()}):\n${result.stderr}`);
      if (args.includes('--json')) {
        const json = parseJson(result.stdout);
        if (json === undefined || !validateOutput(json)) problems.push(`${label}: --json output not in the contract: ${result.stdout.slice(0, 500)}`);
        for (const node of (json as { nodes?: Array<{ id: string; error?: string }> } | undefined)?.nodes ?? []) {
          if (node.error?.includes('\n')) problems.push(`${label}: ${node.id}'s error is not one line: ${node.error}`);
        }
      }
      return result;
    };

    const readable = unreadable ? [2] : [0];
    await command('images list', build.root, ['images', 'list'], readable);
    await command('release check', build.root, ['release', 'check', '--json'], unreadable ? [2] : [0, 1]);
    await command('images download', build.root, ['images', 'download', 'all', '--dir', downloads, '--publish'], unreadable ? [2] : [0, 1], {
      PIPELINE_PUBLISH_DIR: publish,
    });
    // Builds fail on the fresh host, so whatever is published there was fetched.
    await command('fresh host publish', fresh, ['publish', '--json', '--keep-going'], [0, 1], {
      PATH: world.stubPackerPath,
      PIPELINE_PUBLISH_DIR: freshPublish,
    });
    // The honest images no plant touched are fetched and published (the suite is not vacuous).
    const touched = new Set(plants.flatMap((plant) => (plant.kind === 'image' ? [plant.name] : 'name' in plant.entry ? [plant.entry.name] : [])));
    const storeWide = plants.some((plant) => plant.kind === 'odd' && ['tag-link-out', 'blobs-link-out'].includes(plant.entry.kind));
    for (const name of IMAGES) {
      if (!touched.has(name) && !storeWide && !existsSync(join(freshPublish, `${name}.img`)))
        problems.push(`the fresh host did not publish ${name}, which no plant touched`);
    }
    await command('upload', build.root, ['upload:latest', '--offline', '--json'], [0, 1, 2]);
    await command('release remove', build.root, ['release', 'remove', '--all'], unreadable ? [2] : [0]);

    // Nothing outside the store and the target directories changed.
    const hostAfter = await host.fingerprint();
    for (const [path, print] of hostBefore)
      if (hostAfter.get(path) !== print) problems.push(`the host's ${path} changed or went (${print} -> ${hostAfter.get(path)})`);
    for (const path of hostAfter.keys()) if (!hostBefore.has(path)) problems.push(`something wrote ${path} on the host`);
    // No byte of the host's secret anywhere the tool wrote, nor in the store.
    const written = [
      ...(await filesUnder(downloads)),
      ...(await filesUnder(publish)),
      ...(await filesUnder(fresh)),
      ...(await filesUnder(build.path('images'))),
    ].filter(([path]) => !path.startsWith(join(fresh, 'templates')) && !path.startsWith(join(fresh, 'shared')));
    for (const [path, bytes] of written) if (bytes.includes(host.marker)) problems.push(`${path} holds the host's secret`);
    for (const bytes of await store.contents()) if (bytes.includes(host.marker)) problems.push("the store holds the host's secret");
    // What was put in place is a sound image, never a planted hostile one.
    for (const [path, bytes] of written) {
      if (hostile.has(bytes.toString('base64'))) problems.push(`${path} is a planted hostile image`);
      const file = path.split('/').at(-1)!;
      if (file.startsWith('.') || !/\.(qcow2|img)$/.test(file)) continue; // records and sidecars, nothing a VM reads
      const problem = await selfContainedProblem(path, AbortSignal.timeout(60_000));
      if (problem !== undefined) problems.push(`${path} is not a self-contained qcow2: ${problem}`);
    }
    return { problems, exits };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let at: Record<string, unknown> = target;
  for (const key of path.slice(0, -1)) {
    const next = at[key];
    if (next === null || typeof next !== 'object') at[key] = {};
    at = at[key] as Record<string, unknown>;
  }
  at[path.at(-1)!] = value;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

async function filesUnder(dir: string): Promise<Array<[string, Buffer]>> {
  const files: Array<[string, Buffer]> = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])) {
    if (entry.isFile()) files.push([join(entry.parentPath, entry.name), await readFile(join(entry.parentPath, entry.name))]);
  }
  return files;
}

export { TAG };
