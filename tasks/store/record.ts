// What a store records about an image (size, SHA-256, how it is stored, cache key,
// versions, the inputs behind the key), and the index of every image, `images.json`,
// whose format external consumers rely on. Both come back from the network, so they are
// read through a schema.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { parseSha256Line } from '../checksum.ts';
import { Failure } from '../../src/index.ts';
import { imageFileName } from './names.ts';
import type { ImageToPut } from './store.ts';

export const INDEX_NAME = 'images.json';

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);

/**
 * A string a store hands us that ends up in messages, `--json` and files on this host
 * (`image-version.txt`, `.cache-key`): bounded, and without control characters, so a
 * record can neither break a line nor add one to a file.
 */
const plainText = z
  .string()
  .max(4096)
  .refine((text) => !/\p{Cc}/u.test(text), 'holds control characters');

/** The inputs behind an image's cache key (ImageSources). */
export const imageSourcesSchema = z.object({
  base: z.object({
    path: plainText,
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .optional(),
    sha512: z
      .string()
      .regex(/^[0-9a-f]{128}$/)
      .optional(),
  }),
  files: z.record(plainText, plainText),
});

/** Kinds of small files stored with an image: its chunk index (delta fetches) and its signed provenance. */
export const ATTACHMENT_KINDS = ['chunk-index', 'provenance'] as const;
export type AttachmentKind = (typeof ATTACHMENT_KINDS)[number];
/** Largest attachment a store accepts or a reader takes (attachments are read into memory). */
export const MAX_ATTACHMENT_BYTES = 64 * 1024 * 1024;

/** Where a store keeps one attachment (a backend's own name for it), and what its bytes must be. */
const attachmentRefSchema = z.object({
  name: plainText,
  size: z.number().int().nonnegative().max(MAX_ATTACHMENT_BYTES),
  sha256: sha256Hex,
});
export type AttachmentRef = z.infer<typeof attachmentRefSchema>;

/**
 * The git commit an image was built from (`git rev-parse HEAD` of the uploading tree), and
 * whether that tree had changes git had not committed. An upload never replaces an image
 * whose commit is not an ancestor of its own (see tasks/source-commit.ts).
 */
export const sourceCommitSchema = z.object({ sha: z.string().regex(/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/), dirty: z.boolean() });

export const imageRecordSchema = z.object({
  size: z.number().int().nonnegative(),
  sha256: sha256Hex,
  /** The pieces the bytes are stored as, in order (a GitHub release: the whole file or its split parts). */
  parts: z.array(z.object({ name: z.string().regex(/^[A-Za-z0-9._-]{1,255}$/), size: z.number().int().nonnegative() })).max(100_000),
  cacheKey: plainText.optional(),
  /**
   * What a consumer's QEMU must read: `zstd` needs QEMU >= 5.1; `zlib` and `none` (no
   * compressed cluster) any. Absent for an image that is not qcow2, or recorded before.
   */
  compression: z.enum(['zstd', 'zlib', 'none']).optional(),
  versions: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), plainText).default({}),
  sources: imageSourcesSchema.optional(),
  /** Kinds this version does not know are dropped when read (a newer writer's), not refused. */
  attachments: z.object({ 'chunk-index': attachmentRefSchema.optional(), provenance: attachmentRefSchema.optional() }).optional(),
  commit: sourceCommitSchema.optional(),
  uploadedAt: plainText.optional(),
});

const indexSchema = z.object({
  schemaVersion: z.literal(1),
  images: z.record(imageRecordSchema),
});

export type ImageRecord = z.infer<typeof imageRecordSchema>;
export type SourceCommit = z.infer<typeof sourceCommitSchema>;
export type ImageIndex = z.infer<typeof indexSchema>;

export function emptyIndex(): ImageIndex {
  return { schemaVersion: 1, images: {} };
}

/** Parses `images.json` text; a Failure of kind `integrity` says what is wrong with it, in one line. */
export function parseIndex(text: string, source: string): ImageIndex {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Failure('integrity', `${source} is not JSON`);
  }
  const parsed = indexSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Failure(
      'integrity',
      `${source} is not a valid image index (${issue ? `${issue.path.join('.') || 'top level'}: ${issue.message}` : 'bad shape'})`,
    );
  }
  return parsed.data;
}

/** Deterministic text: images sorted, keys in schema order, so equal indexes are equal strings. */
export function serializeIndex(index: ImageIndex): string {
  const images = Object.fromEntries(
    Object.entries(index.images)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, record]) => [name, canonicalRecord(record)]),
  );
  return `${JSON.stringify({ schemaVersion: 1, images }, null, 2)}\n`;
}

/**
 * The record a store keeps for `image` stored as `parts`, with its attachments stored under
 * `attachmentName(kind, sha256)`. `held` is the record of the same bytes already in the
 * store, if any: those bytes were built from its commit, and came in when it says, so both
 * are kept.
 */
export function recordOf(
  image: ImageToPut,
  parts: readonly { name: string; size: number }[],
  uploadedAt: string,
  attachmentName: (kind: AttachmentKind, sha256: string) => string = (kind) => kind,
  held?: ImageRecord,
): ImageRecord {
  const attachments = attachmentRefs(image, attachmentName);
  const commit = held?.commit ?? image.commit;
  return {
    size: image.size,
    sha256: image.sha256,
    parts: parts.map((part) => ({ name: part.name, size: part.size })),
    cacheKey: image.cacheKey,
    ...(image.compression ? { compression: image.compression } : {}),
    versions: { ...image.versions },
    sources: { base: { ...image.sources.base }, files: { ...image.sources.files } },
    ...(attachments ? { attachments } : {}),
    ...(commit ? { commit: { sha: commit.sha, dirty: commit.dirty } } : {}),
    uploadedAt: held?.uploadedAt ?? uploadedAt,
  };
}

/** The refs of an image's attachments (size and SHA-256 of each), or undefined when it has none. */
export function attachmentRefs(
  image: Pick<ImageToPut, 'attachments'>,
  nameOf: (kind: AttachmentKind, sha256: string) => string,
): ImageRecord['attachments'] | undefined {
  const refs: Partial<Record<AttachmentKind, AttachmentRef>> = {};
  for (const kind of ATTACHMENT_KINDS) {
    const bytes = image.attachments?.[kind];
    if (!bytes) continue;
    if (bytes.length > MAX_ATTACHMENT_BYTES)
      throw new Failure('task', `the ${kind} attachment is ${bytes.length} bytes; at most ${MAX_ATTACHMENT_BYTES} are stored`);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    refs[kind] = { name: nameOf(kind, sha256), size: bytes.length, sha256 };
  }
  return Object.keys(refs).length ? refs : undefined;
}

/** `bytes` when they are what `ref` says; an `integrity` Failure naming `where` otherwise. */
export function verifiedAttachment(bytes: Uint8Array, ref: AttachmentRef, kind: AttachmentKind, where: string): Uint8Array {
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  if (bytes.length !== ref.size || sha256 !== ref.sha256) {
    throw new Failure(
      'integrity',
      `the ${kind} of ${where} does not match its record (${bytes.length} bytes, sha256 ${sha256}; the record says ${ref.size}, ${ref.sha256})`,
    );
  }
  return bytes;
}

/**
 * Bytes [from, to) of the attachment `ref` names, `to` clipped to its recorded size, read
 * through `read` (which hands over chunks at their offsets in the attachment, in order):
 * empty when from >= size. Not verified (a range cannot be); a read that gives fewer or
 * more bytes than asked is an `integrity` Failure naming `where`, never a short result.
 */
export async function attachmentRange(
  ref: AttachmentRef,
  kind: AttachmentKind,
  where: string,
  span: { readonly from: number; readonly to: number },
  read: (from: number, to: number, sink: (chunk: Uint8Array, offset: number) => void) => Promise<void>,
): Promise<Uint8Array> {
  const { from, to } = span;
  if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to < 0)
    throw new RangeError(`bytes ${from}-${to} of an attachment: the bounds must be non-negative integers`);
  const end = Math.min(to, ref.size);
  if (from >= end) return new Uint8Array(0);
  const bytes = new Uint8Array(end - from);
  let received = 0;
  await read(from, end, (chunk, offset) => {
    if (offset !== from + received || offset + chunk.length > end)
      throw new Failure('integrity', `the ${kind} of ${where} gave bytes ${offset}-${offset + chunk.length} when ${from + received}-${end} were asked`);
    bytes.set(chunk, received);
    received += chunk.length;
  });
  if (received !== bytes.length)
    throw new Failure(
      'integrity',
      `the ${kind} of ${where} gave ${received} of its bytes ${from}-${end}: it is shorter than the ${ref.size} bytes its record says`,
    );
  return bytes;
}

/** A record with its keys in one order (and nested maps sorted), for comparison and output. */
export function canonicalRecord(record: ImageRecord): ImageRecord {
  const sorted = (map: Readonly<Record<string, string>>) => Object.fromEntries(Object.entries(map).sort(([a], [b]) => a.localeCompare(b)));
  return {
    size: record.size,
    sha256: record.sha256,
    parts: record.parts.map((part) => ({ name: part.name, size: part.size })),
    ...(record.cacheKey !== undefined ? { cacheKey: record.cacheKey } : {}),
    ...(record.compression !== undefined ? { compression: record.compression } : {}),
    versions: sorted(record.versions),
    ...(record.sources
      ? {
          sources: {
            base: {
              path: record.sources.base.path,
              ...(record.sources.base.sha256 !== undefined ? { sha256: record.sources.base.sha256 } : {}),
              ...(record.sources.base.sha512 !== undefined ? { sha512: record.sources.base.sha512 } : {}),
            },
            files: sorted(record.sources.files),
          },
        }
      : {}),
    ...(record.attachments && Object.keys(record.attachments).length
      ? {
          attachments: Object.fromEntries(
            ATTACHMENT_KINDS.flatMap((kind) => {
              const ref = record.attachments?.[kind];
              return ref ? [[kind, { name: ref.name, size: ref.size, sha256: ref.sha256 }]] : [];
            }),
          ),
        }
      : {}),
    ...(record.commit ? { commit: { sha: record.commit.sha, dirty: record.commit.dirty } } : {}),
    ...(record.uploadedAt !== undefined ? { uploadedAt: record.uploadedAt } : {}),
  };
}

/** Same image and same facts about it; when it was uploaded does not count. */
export function sameRecord(a: ImageRecord | undefined, b: ImageRecord): boolean {
  if (!a) return false;
  const { uploadedAt: _a, ...restA } = canonicalRecord(a);
  const { uploadedAt: _b, ...restB } = canonicalRecord(b);
  return JSON.stringify(restA) === JSON.stringify(restB);
}

/** `DEBIAN_VERSION=12.13` lines -> { DEBIAN_VERSION: '12.13' }; blank and comment lines skipped. */
export function parseVersions(text: string): Record<string, string> {
  const versions: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const match = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (match) versions[match[1]!] = match[2]!.replace(/^["']|["']$/g, '');
  }
  return versions;
}

/** The SHA-256 in an image's `.sha256` text, which must name `{name}.qcow2`; throws naming `source`. */
export function checksumOf(text: string, name: string, source: string): string {
  const line = parseSha256Line(text);
  if (!line) throw new Failure('integrity', `${source} is not a sha256sum line ("<sha256>  ${imageFileName(name)}")`);
  if (line.fileName !== imageFileName(name)) throw new Failure('integrity', `${source} names ${line.fileName}, expected ${imageFileName(name)}`);
  return line.sha256;
}
