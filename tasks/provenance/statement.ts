// An image's provenance: an in-toto Statement v1 whose predicate is SLSA Provenance v1.
// Its subject is `{name}.qcow2` by SHA-256; its resolved dependencies are every input the
// image's cache key covers (the base image by URL, upstream's SHA-512 and its SHA-256; each
// template and shared file by SHA-256), plus packer, this tool and the source commit.
//
// The statement is built from the facts a store records about an image (ImageRecord), so
// that a verifier can hold the two against each other: `inputsDisagreement` names the
// first fact on which a signed statement and a record differ.
import { z } from 'zod';
import { imageFileName } from '../store/names.ts';
import type { ImageRecord } from '../store/record.ts';

export const STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
export const SLSA_PROVENANCE_V1 = 'https://slsa.dev/provenance/v1';
/** What kind of build the predicate describes; docs/provenance.md documents its parameters. */
export const BUILD_TYPE = 'https://www.npmjs.com/package/@vmpipeline/pipeline#image-build/v1';
/** The DSSE payload type of an in-toto statement. */
export const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';

/** What a statement says an image was made from and with (each fact optional where a host may not know it). */
export interface ImageProvenance {
  readonly name: string;
  readonly sha256: string;
  /** `KEY=value` facts of image-version.txt. */
  readonly versions: Readonly<Record<string, string>>;
  readonly cacheKey: string;
  readonly compression?: 'zstd' | 'zlib' | 'none';
  readonly accelerator?: string;
  /** The template file, relative to the root. */
  readonly template: string;
  readonly base: { readonly url?: string; readonly path: string; readonly sha256?: string; readonly sha512?: string };
  /** Template and shared files, relative path -> SHA-256. */
  readonly files: Readonly<Record<string, string>>;
  readonly packer?: { readonly version: string; readonly plugins: readonly { readonly source: string; readonly version: string }[] };
  readonly tool: { readonly name: string; readonly version: string };
  readonly source?: { readonly commit: string; readonly dirty: boolean; readonly uri?: string };
  readonly run: {
    /** builder.id: the GitHub Actions workflow (`https://github.com/o/r/.github/workflows/x.yml@refs/heads/main`) or the host. */
    readonly builder: string;
    /** The Actions run attempt's URL, or the host. */
    readonly invocation: string;
    readonly startedOn?: string;
    readonly finishedOn?: string;
  };
}

const digestSet = z.record(z.string());
const resourceDescriptor = z.object({
  name: z.string().optional(),
  uri: z.string().optional(),
  digest: digestSet.optional(),
  annotations: z.record(z.unknown()).optional(),
});

const statementSchema = z.object({
  _type: z.literal(STATEMENT_TYPE),
  subject: z.array(resourceDescriptor.extend({ name: z.string(), digest: digestSet })).min(1),
  predicateType: z.literal(SLSA_PROVENANCE_V1),
  predicate: z.object({
    buildDefinition: z.object({
      buildType: z.string(),
      externalParameters: z.record(z.unknown()),
      internalParameters: z.record(z.unknown()).optional(),
      resolvedDependencies: z.array(resourceDescriptor).optional(),
    }),
    runDetails: z.object({
      builder: z.object({ id: z.string(), version: z.record(z.string()).optional() }),
      metadata: z.object({ invocationId: z.string().optional(), startedOn: z.string().optional(), finishedOn: z.string().optional() }).optional(),
    }),
  }),
});

export type Statement = z.infer<typeof statementSchema>;
type Dependency = z.infer<typeof resourceDescriptor>;

/** Annotations tell the kinds of dependency apart: a file may be called anything. */
const KIND = { base: 'base-image', file: 'input-file', tool: 'tool', source: 'source' } as const;

/** Every input the image's cache key covers, then the tools that built it and the source commit. */
function resolvedDependencies(image: ImageProvenance): Dependency[] {
  return [
    {
      name: 'base-image',
      ...(image.base.url ? { uri: image.base.url } : {}),
      digest: { ...(image.base.sha512 ? { sha512: image.base.sha512 } : {}), ...(image.base.sha256 ? { sha256: image.base.sha256 } : {}) },
      annotations: { kind: KIND.base, path: image.base.path },
    },
    ...Object.entries(image.files)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([path, sha256]) => ({ name: path, digest: { sha256 }, annotations: { kind: KIND.file } })),
    ...(image.packer
      ? [
          { name: 'packer', uri: `pkg:golang/github.com/hashicorp/packer@v${image.packer.version}`, annotations: { kind: KIND.tool } },
          ...image.packer.plugins.map((plugin) => ({
            name: `packer-plugin ${plugin.source}`,
            uri: `pkg:golang/${pluginModule(plugin.source)}@v${plugin.version}`,
            annotations: { kind: KIND.tool },
          })),
        ]
      : []),
    {
      name: image.tool.name,
      uri: `pkg:npm/${encodeURIComponent(image.tool.name).replace('%2F', '/')}@${image.tool.version}`,
      annotations: { kind: KIND.tool },
    },
    ...(image.source
      ? [
          {
            name: 'source',
            ...(image.source.uri ? { uri: image.source.uri } : {}),
            digest: { gitCommit: image.source.commit },
            annotations: { kind: KIND.source, dirty: image.source.dirty },
          },
        ]
      : []),
  ];
}

export function makeStatement(image: ImageProvenance): Statement {
  return {
    _type: STATEMENT_TYPE,
    subject: [{ name: imageFileName(image.name), digest: { sha256: image.sha256 }, annotations: { versions: sortedMap(image.versions) } }],
    predicateType: SLSA_PROVENANCE_V1,
    predicate: {
      buildDefinition: {
        buildType: BUILD_TYPE,
        externalParameters: { image: image.name, template: image.template },
        internalParameters: {
          cacheKey: image.cacheKey,
          ...(image.accelerator !== undefined ? { accelerator: image.accelerator } : {}),
          ...(image.compression !== undefined ? { compression: image.compression } : {}),
        },
        resolvedDependencies: resolvedDependencies(image),
      },
      runDetails: {
        builder: { id: image.run.builder, version: { [image.tool.name]: image.tool.version } },
        metadata: {
          invocationId: image.run.invocation,
          ...(image.run.startedOn ? { startedOn: image.run.startedOn } : {}),
          ...(image.run.finishedOn ? { finishedOn: image.run.finishedOn } : {}),
        },
      },
    },
  };
}

/** `github.com/hashicorp/qemu` -> `github.com/hashicorp/packer-plugin-qemu` (the Go module packer init fetched). */
function pluginModule(source: string): string {
  const parts = source.split('/');
  const last = parts.pop() ?? source;
  return [...parts, `packer-plugin-${last}`].join('/');
}

function sortedMap(map: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(map).sort(([a], [b]) => a.localeCompare(b)));
}

/** The statement's text as it is signed: one line of JSON, in the order makeStatement builds it. */
export function statementBytes(statement: Statement): Buffer {
  return Buffer.from(JSON.stringify(statement));
}

/** Parses a signed payload; a string says what is wrong with it. */
export function parseStatement(payload: Uint8Array): Statement | string {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch {
    return 'its payload is not JSON';
  }
  const parsed = statementSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return `its payload is not an in-toto statement of SLSA provenance v1 (${issue ? `${issue.path.join('.') || 'top level'}: ${issue.message}` : 'bad shape'})`;
  }
  return parsed.data;
}

/** What a statement says about the image it names: the facts a record also holds. */
export interface StatedInputs {
  readonly subject: { readonly name: string; readonly sha256?: string };
  readonly cacheKey?: string;
  readonly compression?: string;
  readonly accelerator?: string;
  readonly versions?: Readonly<Record<string, unknown>>;
  readonly base?: { readonly path?: string; readonly sha256?: string; readonly sha512?: string };
  readonly files: Readonly<Record<string, string | undefined>>;
}

export function statedInputs(statement: Statement): StatedInputs {
  const subject = statement.subject[0]!;
  const internal = statement.predicate.buildDefinition.internalParameters ?? {};
  const dependencies = statement.predicate.buildDefinition.resolvedDependencies ?? [];
  const kindOf = (dependency: Dependency): unknown => dependency.annotations?.kind;
  const base = dependencies.find((dependency) => kindOf(dependency) === KIND.base);
  const files: Record<string, string | undefined> = {};
  for (const dependency of dependencies) if (kindOf(dependency) === KIND.file && dependency.name) files[dependency.name] = dependency.digest?.sha256;
  const versions = subject.annotations?.versions;
  const text = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
  return {
    subject: { name: subject.name, ...(subject.digest.sha256 ? { sha256: subject.digest.sha256 } : {}) },
    ...(text(internal.cacheKey) !== undefined ? { cacheKey: text(internal.cacheKey) } : {}),
    ...(text(internal.compression) !== undefined ? { compression: text(internal.compression) } : {}),
    ...(text(internal.accelerator) !== undefined ? { accelerator: text(internal.accelerator) } : {}),
    ...(versions && typeof versions === 'object' ? { versions: versions as Record<string, unknown> } : {}),
    ...(base
      ? {
          base: {
            ...(text(base.annotations?.path) !== undefined ? { path: text(base.annotations?.path) } : {}),
            ...(base.digest?.sha256 ? { sha256: base.digest.sha256 } : {}),
            ...(base.digest?.sha512 ? { sha512: base.digest.sha512 } : {}),
          },
        }
      : {}),
    files,
  };
}

/**
 * The first way a signed statement disagrees with the record a store keeps of image
 * `name`, in words; undefined when it is about those bytes, made from those inputs.
 * Every fact the record holds must be stated alike: a record that says more than the
 * statement (a file it does not name) disagrees as much as one that says otherwise.
 */
export function inputsDisagreement(statement: Statement, name: string, record: ImageRecord): string | undefined {
  const stated = statedInputs(statement);
  if (stated.subject.name !== imageFileName(name)) return `it is the provenance of ${stated.subject.name}, not ${imageFileName(name)}`;
  if (stated.subject.sha256 !== record.sha256) {
    return `it is signed for other bytes (SHA-256 ${stated.subject.sha256 ?? 'none'}; the store's record says ${record.sha256})`;
  }
  const differs = (what: string, signed: unknown, recorded: unknown): string =>
    `its ${what} (${signed === undefined ? 'none' : String(signed)}) is not the record's (${recorded === undefined ? 'none' : String(recorded)})`;
  if (record.cacheKey !== undefined && stated.cacheKey !== record.cacheKey) return differs('cache key', stated.cacheKey, record.cacheKey);
  if (record.compression !== undefined && stated.compression !== record.compression) return differs('compression', stated.compression, record.compression);
  const versions = stated.versions ?? {};
  for (const key of new Set([...Object.keys(record.versions), ...Object.keys(versions)])) {
    if (versions[key] !== record.versions[key]) return differs(`version ${key}`, versions[key], record.versions[key]);
  }
  const sources = record.sources;
  if (!sources) return undefined;
  const base = stated.base ?? {};
  if (base.path !== sources.base.path) return differs('base image', base.path, sources.base.path);
  if (base.sha256 !== sources.base.sha256) return differs('base image SHA-256', base.sha256, sources.base.sha256);
  if (base.sha512 !== sources.base.sha512) return differs('base image SHA-512', base.sha512, sources.base.sha512);
  for (const path of [...new Set([...Object.keys(sources.files), ...Object.keys(stated.files)])].sort()) {
    if (stated.files[path] !== sources.files[path]) return differs(`${path} SHA-256`, stated.files[path], sources.files[path]);
  }
  return undefined;
}
