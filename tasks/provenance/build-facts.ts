// What a build knows about itself that its outputs do not say: the packer (and plugins)
// that ran, the commit the templates came from, where and when it ran. The build writes
// them beside the image (`images/{name}/.provenance-facts.json`) when it replaces it, so
// that the statement an upload signs later says what built these bytes, not what is
// installed or checked out by then.
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import type { Exec } from '../../src/index.ts';

const factsSchema = z.object({
  packer: z.object({ version: z.string(), plugins: z.array(z.object({ source: z.string(), version: z.string() })) }).optional(),
  source: z.object({ commit: z.string(), dirty: z.boolean(), uri: z.string().optional() }).optional(),
  run: z.object({ builder: z.string(), invocation: z.string(), startedOn: z.string().optional(), finishedOn: z.string().optional() }),
  accelerator: z.string().optional(),
});

export type BuildFacts = z.infer<typeof factsSchema>;
export type RunFacts = BuildFacts['run'];

export function buildFactsPath(imageDir: string): string {
  return join(imageDir, '.provenance-facts.json');
}

export function buildFactsText(facts: BuildFacts): string {
  return `${JSON.stringify(facts, null, 2)}\n`;
}

/** The facts kept beside an image; undefined when there are none (an image built before, or fetched). */
export async function readBuildFacts(imageDir: string): Promise<BuildFacts | undefined> {
  const text = await readFile(buildFactsPath(imageDir), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const parsed = factsSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Where this process runs, as the statement's builder and invocation: in GitHub Actions
 * the workflow (its ref) and the run attempt, else the host.
 */
export function runFacts(env: NodeJS.ProcessEnv, times: { startedOn?: Date; finishedOn?: Date } = {}): RunFacts {
  const when = {
    ...(times.startedOn ? { startedOn: times.startedOn.toISOString() } : {}),
    ...(times.finishedOn ? { finishedOn: times.finishedOn.toISOString() } : {}),
  };
  const server = (env.GITHUB_SERVER_URL || 'https://github.com').replace(/\/+$/, '');
  if (env.GITHUB_ACTIONS === 'true' && env.GITHUB_WORKFLOW_REF && env.GITHUB_REPOSITORY && env.GITHUB_RUN_ID) {
    return {
      builder: `${server}/${env.GITHUB_WORKFLOW_REF}`,
      invocation: `${server}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}/attempts/${env.GITHUB_RUN_ATTEMPT || '1'}`,
      ...when,
    };
  }
  const host = encodeURIComponent(hostname());
  return { builder: `urn:pipeline:host:${host}`, invocation: `urn:pipeline:host:${host}`, ...when };
}

/**
 * The commit checked out at `root` and whether the work tree differs from it; undefined
 * outside a git work tree (or without git). The source's URL is named only in GitHub
 * Actions: a local remote URL may carry credentials.
 */
export async function sourceFacts(root: string, env: NodeJS.ProcessEnv, exec: Exec): Promise<BuildFacts['source']> {
  const quiet = { cwd: root, nothrow: true, onLine: () => undefined } as const;
  const head = await exec('git', ['rev-parse', '--verify', 'HEAD'], quiet).catch(() => undefined);
  const commit = head?.exitCode === 0 ? head.stdout.trim() : '';
  if (!/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(commit)) return undefined;
  const status = await exec('git', ['status', '--porcelain'], quiet).catch(() => undefined);
  const dirty = status?.exitCode !== 0 || status.stdout.trim() !== '';
  const server = (env.GITHUB_SERVER_URL || 'https://github.com').replace(/\/+$/, '');
  const uri =
    env.GITHUB_ACTIONS === 'true' && env.GITHUB_REPOSITORY ? `git+${server}/${env.GITHUB_REPOSITORY}${env.GITHUB_REF ? `@${env.GITHUB_REF}` : ''}` : undefined;
  return { commit, dirty, ...(uri ? { uri } : {}) };
}

/** The plugin sources a template's `required_plugins` names (`github.com/hashicorp/qemu`). */
export function requiredPluginSources(templateText: string): string[] {
  // `source = "…"` as an attribute appears only there: builders are `source "qemu" "name" {` blocks.
  return [...templateText.matchAll(/^\s*source\s*=\s*"([^"]+)"/gm)].map((match) => match[1]!.replace(/^https?:\/\//, ''));
}

/**
 * Plugins `packer plugins installed` lists (packer >= 1.8) among `sources`, by the version
 * in their file names (`…/github.com/hashicorp/qemu/packer-plugin-qemu_v1.1.0_x5.0_linux_amd64`);
 * the highest installed version of each, which is the one packer loads.
 */
export function installedPlugins(listing: string, sources: readonly string[]): { source: string; version: string }[] {
  const found = new Map<string, string>();
  for (const line of listing.split('\n')) {
    const match = /([^\s]+)\/packer-plugin-[^/_\s]+_v(\d+\.\d+\.\d+[^_\s]*)_x/.exec(line.trim());
    if (!match) continue;
    const source = sources.find((candidate) => match[1]!.endsWith(candidate));
    if (!source) continue;
    const previous = found.get(source);
    if (previous === undefined || compareVersions(match[2]!, previous) > 0) found.set(source, match[2]!);
  }
  return [...found].map(([source, version]) => ({ source, version })).sort((a, b) => a.source.localeCompare(b.source));
}

function compareVersions(a: string, b: string): number {
  const parts = (text: string) => text.split(/[.-]/).map((part) => Number.parseInt(part, 10) || 0);
  const [left, right] = [parts(a), parts(b)];
  for (let i = 0; i < Math.max(left.length, right.length); i++) {
    const difference = (left[i] ?? 0) - (right[i] ?? 0);
    if (difference !== 0) return difference;
  }
  return 0;
}

let tool: { name: string; version: string } | undefined;

/** This tool's package name and version, from its package.json (found upwards from this module, source or bundle). */
export function toolIdentity(): { name: string; version: string } {
  if (tool) return tool;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate)) {
      const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string; version?: string };
      if (pkg.name && pkg.version && pkg.name.endsWith('/pipeline')) return (tool = { name: pkg.name, version: pkg.version });
    }
    const parent = dirname(dir);
    if (parent === dir) return (tool = { name: '@vmpipeline/pipeline', version: 'unknown' });
    dir = parent;
  }
}

export interface GatherOptions {
  readonly root: string;
  readonly packer: string;
  readonly packerVersion: { readonly major: number; readonly minor: number; readonly text: string };
  readonly templateText: string;
  readonly accelerator: string;
  readonly startedOn: Date;
  readonly env: NodeJS.ProcessEnv;
  /** The build's TaskContext.exec: packer and git start through it. */
  readonly exec: Exec;
}

/** The facts of a build that just succeeded (the plugins only where packer can list them: 1.8 and later). */
export async function gatherBuildFacts(options: GatherOptions): Promise<BuildFacts> {
  const { packerVersion } = options;
  let plugins: { source: string; version: string }[] = [];
  const sources = requiredPluginSources(options.templateText);
  if (sources.length && (packerVersion.major > 1 || packerVersion.minor >= 8)) {
    const listing = await options
      .exec(options.packer, ['plugins', 'installed'], {
        cwd: options.root,
        nothrow: true,
        onLine: () => undefined,
      })
      .catch(() => undefined);
    if (listing?.exitCode === 0) plugins = installedPlugins(listing.stdout, sources);
  }
  const source = await sourceFacts(options.root, options.env, options.exec);
  return {
    packer: { version: packerVersion.text, plugins },
    ...(source ? { source } : {}),
    run: runFacts(options.env, { startedOn: options.startedOn, finishedOn: new Date() }),
    accelerator: options.accelerator,
  };
}
