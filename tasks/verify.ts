// `pipeline verify [names…]`: re-reads every image in full and compares it with its
// `.sha256` (the old `checksums verify`). Deliberately not through the stat cache: this
// is the integrity check, and a flipped bit does not change a file's stat.
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { basename, relative } from 'node:path';
import { type Command, type CommandIO, type CommandOutput, commandOutput, Failure, formatOutput, nearest } from '../src/index.ts';
import { parseSha256Line } from './checksum.ts';
import { readInOrder } from './store/file-reads.ts';

export interface VerifyCatalog {
  readonly names: readonly string[];
  /** Absolute project root. */
  readonly root: string;
  /** Absolute path of the image. */
  imagePath(name: string): string;
  /** Absolute path of its `.sha256`. */
  checksumPath(name: string): string;
}

export type VerifyStatus = 'ok' | 'failed' | 'missing';

export interface VerifyResult {
  readonly name: string;
  readonly status: VerifyStatus;
  readonly detail?: string;
  readonly expected?: string;
  readonly actual?: string;
}

/** `verify --json`: ok (exit 0) when every image matches its checksum (and, with release.trust, its provenance holds). */
export type VerifyOutput = CommandOutput<'verify', { readonly results: readonly VerifyResult[] }>;

function verifyOutput(ok: boolean, results: readonly VerifyResult[]): VerifyOutput {
  return commandOutput('verify', ok, { results });
}

export interface VerifyOptions {
  /** With release.trust: why an image's provenance is not trusted (tasks/provenance/local-check.ts). */
  readonly provenance?: (name: string) => Promise<string | undefined>;
}

export function verifyCommand(catalog: VerifyCatalog, options: VerifyOptions = {}): Command {
  return {
    usage: 'verify [names…]',
    description: 'Re-hash images and compare them with their .sha256 files (exit 1 when any fails or is missing)',
    async run({ positionals }, io) {
      const names = selectNames(catalog.names, positionals);
      const results: VerifyResult[] = [];
      for (const name of names) {
        io.signal.throwIfAborted();
        const result = await verifyImage(catalog, name, io, options.provenance);
        results.push(result);
        if (!io.json) io.out(formatResult(result));
      }
      const ok = results.every((result) => result.status === 'ok');
      if (io.json) io.out(formatOutput(verifyOutput(ok, results)));
      return ok ? 0 : 1;
    },
  };
}

/** No names (or `all`) means every image; an unknown name is a usage error. */
function selectNames(known: readonly string[], requested: readonly string[]): readonly string[] {
  if (requested.length === 0 || (requested.length === 1 && requested[0] === 'all')) return known;
  for (const name of requested) {
    if (known.includes(name)) continue;
    const guess = nearest(name, known);
    const hint = guess ? ` (did you mean "${guess}"?)` : '';
    throw new Failure('usage', `unknown image "${name}"${hint}; images: ${known.join(', ')}`);
  }
  return [...new Set(requested)];
}

export async function verifyImage(
  catalog: VerifyCatalog,
  name: string,
  io: Pick<CommandIO, 'progress' | 'signal'>,
  provenance?: VerifyOptions['provenance'],
): Promise<VerifyResult> {
  const image = catalog.imagePath(name);
  const checksumFile = catalog.checksumPath(name);
  const shown = (path: string) => relative(catalog.root, path) || path;
  const imageStat = await stat(image).catch(() => undefined);
  if (!imageStat?.isFile()) return { name, status: 'missing' };
  let text: string;
  try {
    text = await readFile(checksumFile, 'utf8');
  } catch {
    return { name, status: 'missing', detail: `no ${shown(checksumFile)}` };
  }
  const recorded = parseSha256Line(text);
  if (!recorded) return { name, status: 'failed', detail: `${shown(checksumFile)} is not a sha256sum line` };
  if (recorded.fileName !== basename(image)) {
    return { name, status: 'failed', detail: `${shown(checksumFile)} is for ${recorded.fileName}, not ${basename(image)}` };
  }
  const actual = await sha256Full(image, imageStat.size, io, `verify ${name}`);
  if (actual !== recorded.sha256) return { name, status: 'failed', expected: recorded.sha256, actual };
  const untrusted = await provenance?.(name);
  if (untrusted !== undefined) return { name, status: 'failed', detail: `not trusted (release.trust): ${untrusted}` };
  return { name, status: 'ok' };
}

function formatResult(result: VerifyResult): string {
  switch (result.status) {
    case 'ok':
      return `${result.name}: OK`;
    case 'missing':
      return result.detail ? `${result.name}: missing (${result.detail})` : `${result.name}: missing`;
    case 'failed':
      return result.expected
        ? `${result.name}: FAILED (expected ${result.expected}, got ${result.actual ?? '?'})`
        : `${result.name}: FAILED (${result.detail ?? 'unreadable'})`;
  }
}

async function sha256Full(path: string, size: number, io: Pick<CommandIO, 'progress' | 'signal'>, label: string): Promise<string> {
  const sha = createHash('sha256');
  io.progress(label, 0, size);
  await readInOrder(path, {
    signal: io.signal,
    each: (chunk, offset) => {
      sha.update(chunk);
      io.progress(label, offset + chunk.length, size);
    },
  });
  return sha.digest('hex');
}
