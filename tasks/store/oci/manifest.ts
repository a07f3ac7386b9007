// The artifacts the OCI store writes, and reading them back through a schema (they come
// from the network):
//
// - an image: an OCI image manifest whose artifactType is this tool's, the empty config,
//   and as layers the image's bytes in order (one layer titled `{name}.qcow2`, or, past the
//   maximum blob size, parts titled `{name}.qcow2.partaa`, `.partab`, … as split(1) names
//   them), so `oras pull` writes the file (or its parts) under its own name. Its record
//   (images.json's entry) is the annotation `vnd.vmpipeline.image.record`; the image's name
//   and the store tag are annotations too, which makes each tag's manifest its own (the
//   registry deletes manifests by digest, taking every tag that points at one);
// - a marker: an empty artifact naming an image and a store tag (see reference.ts);
// - the index: an artifact whose one layer is images.json.
import { z } from 'zod';
import { Failure } from '../../../src/index.ts';
import { imageRecordSchema, type ImageRecord } from '../record.ts';

export const MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json';
export const IMAGE_ARTIFACT_TYPE = 'application/vnd.vmpipeline.image.v1';
export const IMAGE_LAYER_TYPE = 'application/vnd.vmpipeline.image.layer.v1.qcow2';
export const INDEX_ARTIFACT_TYPE = 'application/vnd.vmpipeline.index.v1';
export const MARKER_ARTIFACT_TYPE = 'application/vnd.vmpipeline.marker.v1';
/**
 * What a tag points at after `release remove` on a registry that refuses deletes through
 * its API (GHCR, Docker Hub answer 405): an empty artifact readers take for "no image".
 */
export const REMOVED_ARTIFACT_TYPE = 'application/vnd.vmpipeline.removed.v1';
/** The chunk index travels as a layer of the image's own manifest. */
export const CHUNK_INDEX_LAYER_TYPE = 'application/vnd.vmpipeline.chunk-index.v1';
/** The provenance bundle is a referrer of the image's manifest, as cosign and oras attach signatures. */
export const PROVENANCE_ARTIFACT_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
export const INDEX_MEDIA_TYPE = 'application/vnd.oci.image.index.v1+json';
export const EMPTY_CONFIG = {
  mediaType: 'application/vnd.oci.empty.v1+json',
  digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
  size: 2,
} as const;
export const EMPTY_CONFIG_BYTES = Buffer.from('{}');

/** A record is a few KiB; a manifest (up to 4 MiB) whose record annotation is larger is damage, not parsed. */
const RECORD_LIMIT = 1024 * 1024;

export const TITLE = 'org.opencontainers.image.title';
export const CREATED = 'org.opencontainers.image.created';
export const RECORD_ANNOTATION = 'vnd.vmpipeline.image.record';
export const NAME_ANNOTATION = 'vnd.vmpipeline.image.name';
export const TAG_ANNOTATION = 'vnd.vmpipeline.store.tag';

const digest = z.string().regex(/^sha256:[0-9a-f]{64}$/);
const descriptor = z.object({
  mediaType: z.string(),
  digest,
  size: z.number().int().nonnegative(),
  annotations: z.record(z.string()).optional(),
});
const manifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.literal(MANIFEST_MEDIA_TYPE).optional(),
  artifactType: z.string().optional(),
  config: descriptor,
  layers: z.array(descriptor),
  subject: descriptor.optional(),
  annotations: z.record(z.string()).optional(),
});
const indexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.literal(INDEX_MEDIA_TYPE).optional(),
  manifests: z.array(descriptor.extend({ artifactType: z.string().optional() })),
});

export type Descriptor = z.infer<typeof descriptor>;
export type Manifest = z.infer<typeof manifestSchema>;

export interface ImageLayer {
  readonly title: string;
  readonly digest: string;
  readonly size: number;
}

export interface ImageArtifact {
  readonly name: string;
  readonly tag: string;
  readonly record: ImageRecord;
  readonly layers: readonly ImageLayer[];
  /** The chunk index blob, when the image has one (its record names it too). */
  readonly chunkIndex?: ImageLayer;
}

/** Deterministic bytes: the same image, record and tag always give the same manifest. */
export function imageManifest(artifact: ImageArtifact): Buffer {
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: IMAGE_ARTIFACT_TYPE,
    config: { ...EMPTY_CONFIG },
    layers: [
      ...artifact.layers.map((layer) => ({ mediaType: IMAGE_LAYER_TYPE, digest: layer.digest, size: layer.size, annotations: { [TITLE]: layer.title } })),
      ...(artifact.chunkIndex
        ? [
            {
              mediaType: CHUNK_INDEX_LAYER_TYPE,
              digest: artifact.chunkIndex.digest,
              size: artifact.chunkIndex.size,
              annotations: { [TITLE]: artifact.chunkIndex.title },
            },
          ]
        : []),
    ],
    annotations: {
      ...(artifact.record.uploadedAt ? { [CREATED]: artifact.record.uploadedAt } : {}),
      [NAME_ANNOTATION]: artifact.name,
      [TAG_ANNOTATION]: artifact.tag,
      [RECORD_ANNOTATION]: JSON.stringify(artifact.record),
    },
  };
  return Buffer.from(JSON.stringify(manifest));
}

export function parseManifest(bytes: Buffer, source: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new Failure('integrity', `${source} is not JSON`);
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Failure(
      'integrity',
      `${source} is not an OCI image manifest (${issue ? `${issue.path.join('.') || 'top level'}: ${issue.message}` : 'bad shape'})`,
    );
  }
  return parsed.data;
}

/**
 * The image an image manifest describes, checked: this tool's artifact type, for `name`,
 * a record whose parts are the layers (titles and sizes, in order) and whose size is theirs.
 */
export function readImageManifest(bytes: Buffer, name: string, source: string): ImageArtifact {
  const manifest = parseManifest(bytes, source);
  if (manifest.artifactType !== IMAGE_ARTIFACT_TYPE) {
    throw new Failure('integrity', `${source} is not an image this tool stored (artifactType ${manifest.artifactType ?? 'none'})`);
  }
  const annotations = manifest.annotations ?? {};
  if (annotations[NAME_ANNOTATION] !== name) throw new Failure('integrity', `${source} is for image ${annotations[NAME_ANNOTATION] ?? '(none)'}, not ${name}`);
  // Worded as the other backends word a damaged record, naming the record (the manifest's annotation).
  const recordSource = `${source}'s record`;
  const recordText = annotations[RECORD_ANNOTATION];
  if (recordText === undefined) throw new Failure('integrity', `${source} carries no record`);
  if (recordText.length > RECORD_LIMIT) throw new Failure('integrity', `${recordSource} is ${recordText.length} bytes, more than a record ever is`);
  let json: unknown;
  try {
    json = JSON.parse(recordText);
  } catch {
    throw new Failure('integrity', `${recordSource} is not valid JSON`);
  }
  const parsed = imageRecordSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Failure(
      'integrity',
      `${recordSource} is not a valid record (${issue ? `${issue.path.join('.') || 'top level'}: ${issue.message}` : 'bad shape'})`,
    );
  }
  const record: ImageRecord = parsed.data;
  const layers = manifest.layers
    .filter((layer) => layer.mediaType === IMAGE_LAYER_TYPE)
    .map((layer) => ({ title: layer.annotations?.[TITLE] ?? '', digest: layer.digest, size: layer.size }));
  const matches =
    layers.length === record.parts.length &&
    layers.every((layer, index) => layer.title === record.parts[index]!.name && layer.size === record.parts[index]!.size) &&
    layers.reduce((sum, layer) => sum + layer.size, 0) === record.size;
  if (!matches) throw new Failure('integrity', `${source}: its layers do not match its record's parts`);
  const chunks = manifest.layers.find((layer) => layer.mediaType === CHUNK_INDEX_LAYER_TYPE);
  const chunkIndex = chunks ? { title: chunks.annotations?.[TITLE] ?? '', digest: chunks.digest, size: chunks.size } : undefined;
  return { name, tag: annotations[TAG_ANNOTATION] ?? '', record, layers, ...(chunkIndex ? { chunkIndex } : {}) };
}

/** A marker's manifest: empty, but its own for each image and tag. */
export function markerManifest(name: string, tag: string): Buffer {
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: MARKER_ARTIFACT_TYPE,
    config: { ...EMPTY_CONFIG },
    layers: [],
    annotations: { [NAME_ANNOTATION]: name, [TAG_ANNOTATION]: tag },
  };
  return Buffer.from(JSON.stringify(manifest));
}

/** The index artifact: images.json as its one layer. */
export function indexManifest(tag: string, index: Descriptor): Buffer {
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: INDEX_ARTIFACT_TYPE,
    config: { ...EMPTY_CONFIG },
    layers: [{ ...index, annotations: { [TITLE]: 'images.json' } }],
    annotations: { [TAG_ANNOTATION]: tag },
  };
  return Buffer.from(JSON.stringify(manifest));
}

/** A provenance bundle as a referrer artifact of the image manifest `subject`. */
export function provenanceManifest(subject: Descriptor, bundle: Descriptor, title: string): Buffer {
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: PROVENANCE_ARTIFACT_TYPE,
    config: { ...EMPTY_CONFIG },
    layers: [{ ...bundle, mediaType: PROVENANCE_ARTIFACT_TYPE, annotations: { [TITLE]: title } }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
  };
  return Buffer.from(JSON.stringify(manifest));
}

export interface ReferrerEntry {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly artifactType?: string;
}

/** The referrers tag schema's image index (`sha256-<hex>`), for registries without the referrers API. */
export function referrersIndex(entries: readonly ReferrerEntry[]): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX_MEDIA_TYPE, manifests: entries }));
}

export function parseReferrersIndex(bytes: Buffer): ReferrerEntry[] {
  try {
    const parsed = indexSchema.safeParse(JSON.parse(bytes.toString('utf8')));
    return parsed.success ? parsed.data.manifests.map(({ annotations: _annotations, ...entry }) => entry) : [];
  } catch {
    return [];
  }
}

/** The tombstone a removed image's tag (or marker) points at where the registry cannot delete. */
export function removedManifest(name: string, tag: string, at: string): Buffer {
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: REMOVED_ARTIFACT_TYPE,
    config: { ...EMPTY_CONFIG },
    layers: [],
    annotations: { [NAME_ANNOTATION]: name, [TAG_ANNOTATION]: tag, [CREATED]: at },
  };
  return Buffer.from(JSON.stringify(manifest));
}

/** True for a tombstone left by `release remove`. */
export function isRemoved(bytes: Buffer): boolean {
  try {
    return (JSON.parse(bytes.toString('utf8')) as { artifactType?: unknown }).artifactType === REMOVED_ARTIFACT_TYPE;
  } catch {
    return false;
  }
}
