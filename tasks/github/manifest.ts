// `images.json` on a release: per image its size, sha256, parts, cache key, compression, versions and
// the inputs behind the key. Read back through a schema, since it comes from the network.
import { z } from 'zod';
import { MANIFEST_ASSET } from './asset-names.ts';
import type { ReleaseAsset, ReleaseStore } from './releases.ts';

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);

const manifestEntrySchema = z.object({
  size: z.number().int().nonnegative(),
  sha256: sha256Hex,
  parts: z.array(z.object({ name: z.string(), size: z.number().int().nonnegative() })),
  cacheKey: z.string().optional(),
  /**
   * What a consumer's QEMU must read: `zstd` needs QEMU >= 5.1; `zlib` and `none` (no
   * compressed cluster) any. Absent for an image that is not qcow2, or recorded before.
   */
  compression: z.enum(['zstd', 'zlib', 'none']).optional(),
  versions: z.record(z.string()).default({}),
  sources: z
    .object({
      base: z.object({ path: z.string(), sha256: z.string().optional(), sha512: z.string().optional() }),
      files: z.record(z.string()),
    })
    .optional(),
  uploadedAt: z.string().optional(),
});

const manifestSchema = z.object({
  schemaVersion: z.literal(1),
  images: z.record(manifestEntrySchema),
});

export type ManifestEntry = z.infer<typeof manifestEntrySchema>;
export type ImagesManifest = z.infer<typeof manifestSchema>;

export function emptyManifest(): ImagesManifest {
  return { schemaVersion: 1, images: {} };
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

export async function readManifest(
  store: ReleaseStore,
  assets: readonly ReleaseAsset[],
  signal: AbortSignal,
): Promise<ImagesManifest | undefined> {
  const asset = assets.find((candidate) => candidate.name === MANIFEST_ASSET && candidate.state === 'uploaded');
  if (!asset) return undefined;
  const text = await store.downloadText(asset, signal);
  try {
    return manifestSchema.parse(JSON.parse(text));
  } catch (error) {
    throw new Error(`${MANIFEST_ASSET} on the release is not a valid manifest: ${error instanceof Error ? error.message.slice(0, 300) : error}`);
  }
}

export function serializeManifest(manifest: ImagesManifest): string {
  const images = Object.fromEntries(Object.entries(manifest.images).sort(([a], [b]) => a.localeCompare(b)));
  return `${JSON.stringify({ schemaVersion: 1, images }, null, 2)}\n`;
}

// Upload nodes of one run may finish together; their read-modify-write of the manifest
// must not interleave. (Separate processes uploading to one release still can: last writer wins.)
const manifestLocks = new Map<string, Promise<void>>();

export async function withManifestLock<T>(key: string, action: () => Promise<T>): Promise<T> {
  const previous = manifestLocks.get(key) ?? Promise.resolve();
  let release!: () => void;
  const current = new Promise<void>((resolve) => (release = resolve));
  const chained = previous.then(() => current);
  manifestLocks.set(key, chained);
  await previous;
  try {
    return await action();
  } finally {
    release();
    if (manifestLocks.get(key) === chained) manifestLocks.delete(key);
  }
}
