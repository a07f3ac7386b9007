// A node's stamp: what its last successful run recorded (fingerprint, manifest, output
// digests), one file per node under the state directory. This is the one place that
// reads, writes and names stamp files; the stamp index (stamp-index.ts) is a cache of them.
import { closeSync, openSync, readdirSync, readSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic.ts';
import { boundedStem } from './file-stem.ts';
import type { Manifest } from './fingerprint.ts';
import type { NodeId, NodeRecord } from './types.ts';

export interface Stamp {
  version: 1;
  /** The node's id: its file name holds only a digest of a long one. Absent in stamps of older versions. */
  id?: NodeId;
  fingerprint: string;
  manifest: Manifest;
  outputs: Record<string, string>;
  outputDigest: string;
  finishedAt: string;
}

const STAMP_SUFFIX = '.json';

export function stampsDir(stateDir: string): string {
  return join(stateDir, 'stamps');
}

function stampPath(stateDir: string, id: NodeId): string {
  return join(stampsDir(stateDir), stampFileName(id));
}

/** The id, escaped to be one path component (`nodeIdOf` reads it back), and bounded in length. */
export function stampFileName(id: NodeId): string {
  return `${boundedStem(encodeURIComponent(id), id)}${STAMP_SUFFIX}`;
}

/**
 * The node's stamp, or undefined when there is none or it is unreadable (the node is then
 * stale). Synchronous: a run without the stamp index reads one small stamp per node, and
 * the promise API's open/stat/read/close round trips through the thread pool cost more
 * than the reads.
 */
export function readStamp(stateDir: string, id: NodeId): Stamp | undefined {
  return stampAt(stampPath(stateDir, id));
}

/** What a task kind may read of another node's stamp (`NodeRecord`), or undefined when it has none. */
export function recordOf(stateDir: string, id: NodeId): NodeRecord | undefined {
  const stamp = readStamp(stateDir, id);
  if (!stamp) return undefined;
  return { outputs: stamp.outputs, finishedAt: stamp.finishedAt, ...(stamp.manifest.probe !== undefined ? { probe: stamp.manifest.probe } : {}) };
}

/**
 * Every stamp in the stamps directory with the node it is for; `clean` is false when the
 * directory also holds temp files (dot-named: a write in flight, or abandoned).
 */
export function readAllStamps(stateDir: string): { stamps: Map<NodeId, Stamp>; clean: boolean } {
  const stamps = new Map<NodeId, Stamp>();
  let clean = true;
  for (const name of readdirSync(stampsDir(stateDir))) {
    if (name.startsWith('.')) clean = false;
    if (!name.endsWith(STAMP_SUFFIX) || name.startsWith('.')) continue;
    const stamp = stampAt(join(stampsDir(stateDir), name));
    const id = stamp ? nodeIdOf(name, stamp) : undefined;
    if (stamp && id !== undefined) stamps.set(id, stamp);
  }
  return { stamps, clean };
}

/**
 * The node a stamp file is for: the id it records (a long one's file name holds only a
 * digest of it), else the one its name encodes (stamps of older versions); undefined when
 * the file is not where `stampFileName` puts that node's stamp (copied, or renamed).
 */
function nodeIdOf(fileName: string, stamp: Stamp): NodeId | undefined {
  let id = stamp.id;
  if (typeof id !== 'string') {
    try {
      id = decodeURIComponent(fileName.slice(0, -STAMP_SUFFIX.length));
    } catch {
      return undefined;
    }
  }
  return stampFileName(id) === fileName ? id : undefined;
}

/** The stamp in a file, or undefined when there is none or it is not one this version writes. */
function stampAt(path: string): Stamp | undefined {
  let value: unknown;
  try {
    value = JSON.parse(readSmallFile(path));
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== 'object') return undefined;
  const stamp = value as Partial<Stamp>;
  if (stamp.version !== 1 || typeof stamp.fingerprint !== 'string' || !stamp.manifest || !stamp.outputs) return undefined;
  return stamp as Stamp;
}

/** Reused by every stamp read: one stamp is a few hundred bytes. */
let readBuffer = Buffer.allocUnsafe(64 * 1024);

/**
 * A small file's text: open, read, close (readFileSync also stats it first, a call more
 * per stamp). A read that fills less than it asked for has reached the end of a regular
 * file, so a stamp costs three system calls, not four; a no-op run without the stamp
 * index reads a stamp per node.
 */
function readSmallFile(path: string): string {
  const fd = openSync(path, 'r');
  try {
    let length = 0;
    for (;;) {
      const wanted = readBuffer.length - length;
      const read = readSync(fd, readBuffer, length, wanted, length);
      if (read < wanted) return readBuffer.toString('utf8', 0, length + read);
      // The buffer is full: the file may go on.
      length += read;
      const larger = Buffer.allocUnsafe(readBuffer.length * 2);
      readBuffer.copy(larger);
      readBuffer = larger;
    }
  } finally {
    closeSync(fd);
  }
}

export async function writeStamp(stateDir: string, id: NodeId, stamp: Stamp): Promise<void> {
  await writeFileAtomic(stampPath(stateDir, id), `${JSON.stringify({ ...stamp, id }, null, 1)}\n`);
}

export async function removeStamp(stateDir: string, id: NodeId): Promise<void> {
  await rm(stampPath(stateDir, id), { force: true });
}
