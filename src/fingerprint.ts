// Everything that can change a node's output, as one value: its manifest lists its kind,
// parameters, input file contents, declared environment, probe value and the output
// digests of its dependencies (so a dependency rebuilt to identical bytes does not make
// it stale: early cutoff). Its fingerprint is the xxh64 of that manifest. assess.ts
// compares a node's manifest with the one its stamp recorded.
import { stringHasher, xxhString } from './hasher.ts';
import { Failure } from './failure.ts';
import type { Reason } from './reason.ts';
import type { FileHasher, Json, NodeDef, NodeId, ProbeResult } from './types.ts';
import { resolveUnder } from './under-root.ts';

export interface Manifest {
  kind: string;
  params: string;
  files: Record<string, string>;
  env: Record<string, string>;
  deps: Record<string, string>;
  probe?: string;
}

/** What a manifest is made from besides the node's definition. */
export interface ManifestContext {
  readonly root: string;
  readonly hasher: FileHasher;
  /** Output digests of dependencies; `undefined` means the dependency has yet to run. */
  readonly depOutputs: ReadonlyMap<NodeId, string | undefined>;
  /**
   * Digests of input files taken when planning began (files no node of the run writes):
   * used instead of a second stat of each. Absent once nodes have run.
   */
  readonly inputDigests?: ReadonlyMap<string, string>;
  /** The probe's answer this run; undefined when the node has none or it was not evaluated. */
  readonly probe: ProbeResult | undefined;
  /** Adds the bytes read hashing. */
  readonly account: { bytes: number };
}

export function fingerprintOf(manifest: Manifest): Promise<string> {
  return xxhString(canonicalJson(manifest as unknown as Json));
}

/** Output digests by path, or the reason they cannot all be had (an output is missing). */
export type HashedOutputs = { readonly digests: Record<string, string> } | { readonly missing: Reason };

/** Hashes the node's declared outputs. */
export async function hashOutputs(
  node: NodeDef,
  /** `observe`: after the node ran, so its `observeOutput` sees the outputs' bytes. */
  context: Pick<ManifestContext, 'root' | 'hasher' | 'account'> & { readonly observe?: boolean },
  onProgress?: (path: string, done: number, total: number) => void,
): Promise<HashedOutputs> {
  const digests: Record<string, string> = {};
  for (const path of node.outputs ?? []) {
    const absolute = resolveUnder(context.root, path);
    const sha256 = node.sha256Outputs?.includes(path) === true;
    try {
      const observer = context.observe ? node.observeOutput?.(path, absolute) : undefined;
      const digest =
        (observer ? undefined : context.hasher.known?.(absolute, { sha256 })) ??
        (await context.hasher.hash(absolute, {
          sha256,
          account: context.account,
          ...(observer ? { observe: observer } : {}),
          ...(onProgress ? { onProgress: (done: number, total: number) => onProgress(path, done, total) } : {}),
        }));
      await observer?.finish(digest);
      digests[path] = digest.xxh;
    } catch (error) {
      if (isMissing(error)) return { missing: { code: 'output-missing', path } };
      throw error;
    }
  }
  return { digests };
}

export async function outputDigestOf(outputs: Record<string, string>, fingerprint: string): Promise<string> {
  // A node without file outputs passes its fingerprint on, so its dependents still notice
  // when it changed.
  if (Object.keys(outputs).length === 0) return fingerprint;
  return xxhString(canonicalJson(outputs));
}

export async function buildManifest(node: NodeDef, context: ManifestContext, options: { skipFiles?: ReadonlySet<string> } = {}): Promise<Manifest> {
  const files: Record<string, string> = {};
  for (const path of node.files ?? []) {
    if (options.skipFiles?.has(path)) continue;
    try {
      const digest = inputDigest(context, path);
      files[path] = typeof digest === 'string' ? digest : await digest;
    } catch (error) {
      if (isMissing(error)) throw new Failure('config', `${node.id}: input file ${path} does not exist`);
      throw error;
    }
  }
  if (node.inputs && node.inputs.length > 0) {
    // Loaded on first use: image pipelines declare exact files and never glob.
    const { default: fg } = await import('fast-glob');
    const matched = await fg([...node.inputs], { cwd: context.root, onlyFiles: true, dot: false, followSymbolicLinks: true });
    matched.sort();
    for (const path of matched) if (!options.skipFiles?.has(path)) files[path] ??= await inputDigest(context, path);
  }
  const hashText = await stringHasher();
  const env: Record<string, string> = {};
  for (const name of node.env ?? []) env[name] = envDigest(name, hashText);
  const deps: Record<string, string> = {};
  for (const dep of node.deps) {
    const output = context.depOutputs.get(dep);
    if (output !== undefined) deps[dep] = output;
  }
  return {
    kind: node.kind,
    params: paramsDigest(node, hashText),
    files,
    env,
    deps,
    ...(context.probe !== undefined ? { probe: context.probe.value } : {}),
  };
}

/** An input file's xxh64: from the stat cache without a promise when it can answer. */
function inputDigest(context: ManifestContext, path: string): string | Promise<string> {
  const planned = context.inputDigests?.get(path);
  if (planned !== undefined) return planned;
  const absolute = resolveUnder(context.root, path);
  return context.hasher.known?.(absolute)?.xxh ?? context.hasher.hash(absolute, { account: context.account }).then((digest) => digest.xxh);
}

/** Whether two manifests are the same value (what their canonical JSON would say, without making it). */
export function sameManifest(recorded: Manifest, current: Manifest): boolean {
  for (const key of Object.keys(recorded)) if (!MANIFEST_KEYS.has(key)) return false;
  return (
    recorded.kind === current.kind &&
    recorded.params === current.params &&
    recorded.probe === current.probe &&
    sameStrings(recorded.files, current.files) &&
    sameStrings(recorded.env, current.env) &&
    sameStrings(recorded.deps, current.deps)
  );
}

export const MANIFEST_KEYS = new Set(['kind', 'params', 'files', 'env', 'deps', 'probe']);

function sameStrings(recorded: Readonly<Record<string, string>> | undefined, current: Readonly<Record<string, string>>): boolean {
  if (recorded === null || typeof recorded !== 'object') return false;
  let count = 0;
  for (const key in recorded) {
    if (!Object.hasOwn(recorded, key) || recorded[key] !== current[key]) return false;
    count++;
  }
  return count === Object.keys(current).length;
}

/** What a manifest records of an environment variable: values may be secrets, so only their hash; unset differs from empty. */
export function envDigest(name: string, hashText: (text: string) => string): string {
  const value = process.env[name];
  return value === undefined ? 'unset' : hashText(`=${value}`);
}

export function paramsDigest(node: NodeDef, hashText: (text: string) => string): string {
  return hashText(canonicalJson(node.params ?? null));
}

/** The first difference between the recorded and the current manifest. */
export function manifestDifference(before: Manifest, after: Manifest): Reason | undefined {
  if (before.kind !== after.kind) return { code: 'kind-changed', from: before.kind, to: after.kind };
  if (before.params !== after.params) return { code: 'params-changed' };
  for (const path of Object.keys(after.files)) {
    if (!(path in before.files)) return { code: 'input-added', path };
    if (before.files[path] !== after.files[path]) return { code: 'input-changed', path };
  }
  for (const path of Object.keys(before.files)) if (!(path in after.files)) return { code: 'input-removed', path };
  for (const name of new Set([...Object.keys(before.env), ...Object.keys(after.env)])) {
    if (before.env[name] !== after.env[name]) return { code: 'env-changed', name };
  }
  for (const dep of Object.keys(after.deps)) {
    if (before.deps[dep] !== after.deps[dep]) return { code: 'dependency-changed', id: dep };
  }
  if (before.probe !== after.probe) return { code: 'upstream-changed' };
  return undefined;
}

export function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** JSON with sorted object keys, so equal values always hash equal. */
export function canonicalJson(value: Json): string {
  // Built by concatenation, with no arrays of parts: every node's parameters go through
  // it at every plan. The text must stay byte for byte what stamps were written with
  // (test/canonical-json.test.ts holds it to the first version): an array element with
  // no JSON form is left empty, as join() leaves it, and an object value with none is
  // written `undefined`, as a template string writes it.
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) {
    let text = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) text += ',';
      const element = canonicalJson(value[i] as Json) as string | undefined;
      if (element !== undefined) text += element;
    }
    return `${text}]`;
  }
  const keys = Object.keys(value).sort();
  let text = '{';
  for (let i = 0; i < keys.length; i++) {
    if (i > 0) text += ',';
    text += `${JSON.stringify(keys[i])}:${canonicalJson(value[keys[i]!] as Json)}`;
  }
  return `${text}}`;
}
