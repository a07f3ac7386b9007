// What a node's successful run leaves besides its outputs: its stamp, and its key file
// when it has one (written last: its presence with the right value marks the build good).
import { mkdir, rm } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Verdict } from './assess.ts';
import { writeFileAtomic } from './atomic.ts';
import { fingerprintOf, hashOutputs, type Manifest, outputDigestOf } from './fingerprint.ts';
import { removeStamp, writeStamp } from './stamp.ts';
import type { FileHasher, NodeDef, ProbeResult } from './types.ts';

export interface RecordOptions {
  readonly root: string;
  readonly stateDir: string;
  readonly hasher: FileHasher;
}

/**
 * Records a run that produced `outputs` (their digests) from the manifest the verdict was
 * made of. `after`: the probe read again after the run, since the node may have changed
 * what it probes (an upload puts the remote checksum in place), so the next run finds it
 * fresh. `key`: the key file's value, when the node has one. Returns the output digest.
 */
export async function recordRun(
  node: NodeDef,
  made: { readonly manifest: Manifest; readonly fingerprint: string },
  outputs: Record<string, string>,
  after: { readonly probe: ProbeResult | undefined; readonly key: string | undefined },
  options: RecordOptions,
): Promise<string> {
  let { manifest, fingerprint } = made;
  if (after.probe && after.probe.value !== manifest.probe) {
    manifest = { ...manifest, probe: after.probe.value };
    fingerprint = await fingerprintOf(manifest);
  }
  const outputDigest = await outputDigestOf(outputs, fingerprint);
  await writeStamp(options.stateDir, node.id, { version: 1, fingerprint, manifest, outputs, outputDigest, finishedAt: new Date().toISOString() });
  if (node.key && after.key !== undefined) {
    const keyPath = resolve(options.root, node.key.path);
    await mkdir(dirname(keyPath), { recursive: true });
    await writeFileAtomic(keyPath, `${after.key}\n`);
  }
  return outputDigest;
}

/** Outputs that another tool built, checked by the node's kind: recorded as ours. */
export async function recordAdoption(node: NodeDef, verdict: Extract<Verdict, { adopt: true }>, options: RecordOptions): Promise<void> {
  const hashed = await hashOutputs(node, { root: options.root, hasher: options.hasher, account: { bytes: 0 } });
  if ('missing' in hashed) return;
  await writeStamp(options.stateDir, node.id, {
    version: 1,
    fingerprint: verdict.fingerprint,
    manifest: verdict.manifest,
    outputs: hashed.digests,
    outputDigest: verdict.outputDigest,
    finishedAt: new Date().toISOString(),
  });
}

/** Forgets the node's last run before its outputs are replaced: an interruption then leaves it stale, never stamped for other outputs. */
export async function forgetRecord(node: NodeDef, options: Pick<RecordOptions, 'root' | 'stateDir'>): Promise<void> {
  await removeStamp(options.stateDir, node.id);
  if (node.key) await rm(resolve(options.root, node.key.path), { force: true });
}
