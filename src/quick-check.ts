// The quick check: a node whose stamp, as the stamp index recorded it, equals what a stamp
// written now would hold, by digests the stat cache knows without reading a file, is up
// to date. A no-op run settles nearly every node this way; `assess` (assess.ts) decides
// every other case, and would give the same answer for these.
import type { AssessContext, Verdict } from './assess.ts';
import { envDigest, MANIFEST_KEYS, paramsDigest } from './fingerprint.ts';
import { stringHasher } from './hasher.ts';
import { UP_TO_DATE } from './reason.ts';
import type { Stamp } from './stamp.ts';
import type { FileHasher, NodeDef, NodeId } from './types.ts';
import { resolveUnder } from './under-root.ts';

/**
 * What the quick check needs of a node's stamp: its fingerprint and output digest, and
 * its record, the manifest and output digests in one exact text (`recordOfStamp`).
 */
export interface RecordedStamp {
  readonly fingerprint: string;
  readonly outputDigest: string;
  readonly record: string;
}

/** Recorded stamps by node id, as a plan read them at once (stamp-index.ts). */
export interface RecordedLookup {
  get(id: NodeId): RecordedStamp | undefined;
}

/**
 * `assess` for a node whose answer is "up to date" by what is known at once: its recorded
 * stamp in the stamp index, and the stat cache's digests of its inputs and outputs and its
 * dependencies' outputs, all equal to what the stamp recorded. A no-op run settles nearly
 * every node this way, without building a manifest, hashing it, reading a stamp file or
 * making a promise. The function returned answers undefined whenever anything needs more
 * (no stamp index, a file to read, a glob, a key file, a dependency still to run, any
 * difference at all): `assess` decides those, and its answer for the nodes this one
 * settles would be the same.
 */
export async function quickAssessor(): Promise<(node: NodeDef, context: AssessContext) => Verdict | undefined> {
  const hashText = await stringHasher();
  return (node, context) => {
    if (context.forced || node.key || (node.inputs && node.inputs.length > 0)) return undefined;
    const recorded = context.recorded?.get(node.id);
    if (!recorded) return undefined;
    const current = currentRecord(node, context, hashText);
    if (current === undefined || current !== recorded.record) return undefined;
    // The recorded manifest is the current one, so its fingerprint is the stamp's.
    return { fresh: true, adopt: false, reason: UP_TO_DATE, fingerprint: recorded.fingerprint, outputDigest: recorded.outputDigest };
  };
}

/**
 * A stamp's manifest and output digests as one text that equals another exactly when both
 * hold the same values. Each string is framed by its length, so no value can be taken for
 * a separator, and each list's entries are sorted, so the order a record was written in
 * does not matter (object keys that look like numbers do not keep it). Undefined when the
 * stamp has anything this version does not write: its node is then always assessed in full.
 */
export function recordOfStamp(stamp: Stamp): string | undefined {
  const { manifest, outputs } = stamp;
  if (!isRecord(manifest) || !isRecord(outputs)) return undefined;
  for (const key of Object.keys(manifest)) if (!MANIFEST_KEYS.has(key)) return undefined;
  const { kind, params, probe } = manifest;
  if (typeof kind !== 'string' || typeof params !== 'string' || (probe !== undefined && typeof probe !== 'string')) return undefined;
  const lists = [manifest.files, manifest.env, manifest.deps, outputs].map(entriesText);
  if (lists.some((list) => list === undefined)) return undefined;
  return recordHead(kind, probe, params) + lists.join('');
}

/**
 * The record (`recordOfStamp`) a stamp written now would have, from the node's definition
 * and the digests known without reading a file; undefined when one is not known. Made by
 * concatenation: it runs for every node of a no-op.
 */
function currentRecord(node: NodeDef, context: AssessContext, hashText: (text: string) => string): string | undefined {
  const files: string[] = [];
  for (const path of node.files ?? []) {
    const digest = context.inputDigests?.get(path) ?? knownDigest(context.hasher, resolveUnder(context.root, path), false);
    if (digest === undefined) return undefined;
    files.push(entryText(path, digest));
  }
  const env: string[] = [];
  for (const name of node.env ?? []) env.push(entryText(name, envDigest(name, hashText)));
  const deps: string[] = [];
  for (const dep of node.deps) {
    const output = context.depOutputs.get(dep);
    if (output === undefined) return undefined;
    deps.push(entryText(dep, output));
  }
  const outputs: string[] = [];
  for (const path of node.outputs ?? []) {
    const digest = knownDigest(context.hasher, resolveUnder(context.root, path), node.sha256Outputs?.includes(path) === true);
    if (digest === undefined) return undefined;
    outputs.push(entryText(path, digest));
  }
  return recordHead(node.kind, context.probe?.value, paramsDigest(node, hashText)) + listText(files) + listText(env) + listText(deps) + listText(outputs);
}

function recordHead(kind: string, probe: string | undefined, params: string): string {
  return framed(kind) + (probe === undefined ? '-' : `+${framed(probe)}`) + framed(params);
}

function framed(text: string): string {
  return `${text.length}:${text}`;
}

function entryText(name: string, value: string): string {
  return framed(name) + framed(value);
}

/** A list of framed entries: its length, then the entries in one order whatever order they came in. */
function listText(entries: string[]): string {
  if (entries.length < 2) return `${entries.length};${entries.length === 1 ? entries[0] : ''}`;
  return `${entries.length};${entries.sort().join('')}`;
}

/** A record of strings as a list (`listText`), or undefined when it is not one. */
function entriesText(value: unknown): string | undefined {
  if (!isRecord(value)) return undefined;
  const entries: string[] = [];
  for (const [name, text] of Object.entries(value)) {
    if (typeof text !== 'string') return undefined;
    entries.push(entryText(name, text));
  }
  return listText(entries);
}

/** A digest the stat cache knows for the file as it is, or undefined (not known without reading, or not readable: `assess` says why). */
function knownDigest(hasher: FileHasher, path: string, sha256: boolean): string | undefined {
  try {
    return hasher.known?.(path, { sha256 })?.xxh;
  } catch {
    return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
