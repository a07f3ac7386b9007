// `defineImagePipeline` (the package's `defineConfig`): an image pipeline's bases, images
// and extra steps become engine nodes
//
//   {base}:download -> {image}:build -> {image}:checksum -> {image}:publish
//                                                        -> {image}:upload
//
// with the targets README's "Targets" names as aliases and `upload:{tag}` as a target family.
// References are typed: an image's base, and a step's dependency, must be declared.
import { basename, posix } from 'node:path';
import {
  checkConfigShape,
  type ConfigContext,
  type EngineConfig,
  Failure,
  type Json,
  type NodeDef,
  type NodeId,
  type StepDecl,
  stepNodes,
  type TargetFamily,
} from '../src/index.ts';
import { buildNode } from './build.ts';
import { createImageCatalog } from './image-catalog.ts';
import { checksumNode } from './checksum.ts';
import { downloadNode, fetchUpstreamSha512, redownload } from './download.ts';
import { imagesCommand } from './images.ts';
import { releaseCommand } from './release.ts';
import { storeSettings } from './store/backends.ts';
// The type alone, from where no backend's code is: a config's tsc may run without @types/node.
import type { ReleaseDecl } from './store/release-decl.ts';
import type { ImageCatalog } from './store/catalog.ts';
import { checkTag, isValidImageName } from './store/names.ts';
import { createUploadNode } from './upload.ts';
import { publishNode } from './publish.ts';
import { createRemoteCache, type ImageRemoteCache } from './remote-cache.ts';
import { pipelineConfigSchema } from './config-schema.ts';
import { provenanceCommand } from './provenance/command.ts';
import { localProvenanceCheck } from './provenance/local-check.ts';
import type { Compression } from './qemu-img.ts';
import { verifyCommand } from './verify.ts';

export const STEPS = ['download', 'build', 'checksum', 'publish', 'upload'] as const;
export type Step = (typeof STEPS)[number];

export interface BaseDecl<Ref extends string> {
  /** The upstream cloud image (http, https or file URL). */
  readonly url: string;
  /** The upstream SHA512SUMS that lists it. */
  readonly checksumsUrl: string;
  /** Where it is cached, relative to the root; default `cache/{basename of url}`. */
  readonly file?: string;
  /** Steps that must run first (the offline demo makes its "upstream" this way). */
  readonly deps?: readonly Ref[];
}

export interface ImageDecl<B extends string> {
  readonly base: B;
  readonly description?: string;
  /** More files the image's cache key covers, after the template's and shared/'s six. */
  readonly extraFiles?: readonly string[];
  /** What the key cannot see, said by `explain` (pve-* images get the PVE caveat). */
  readonly caveat?: string;
  /** QEMU accelerator passed to the template (default from the config, else `kvm`). */
  readonly accelerator?: string;
  /** qcow2 compression of this image (default from the config, else zstd). */
  readonly compression?: Compression;
}

/** Every name a step may depend on: steps, image targets, base downloads. */
export type TargetRef<B extends string, I extends string, S extends string> = S | I | `${I}:${Step}` | `${B}:download`;

export interface PipelineConfig<B extends string, I extends string, S extends string> {
  readonly bases: { readonly [K in B]: BaseDecl<NoInfer<TargetRef<B, I, S>>> };
  readonly images: { readonly [K in I]: ImageDecl<NoInfer<B>> };
  readonly steps?: { readonly [K in S]: StepDecl<NoInfer<TargetRef<B, I, S>>> };
  /** Where `publish` installs `{name}.img` (PIPELINE_PUBLISH_DIR overrides it). */
  readonly publishDir?: string;
  /** Template folders, relative to the root (default `templates`). */
  readonly templatesDir?: string;
  /** The shared cloud-init and scripts folder, relative to the root (default `shared`). */
  readonly sharedDir?: string;
  readonly accelerator?: string;
  /**
   * qcow2 compression of built images: `zstd` (default; QEMU >= 5.1 reads it) or `zlib`
   * (for consumers on older QEMU). Part of the build's parameters: a change rebuilds.
   */
  readonly compression?: Compression;
  readonly release?: ReleaseDecl;
  /** Pool limits; defaults: one packer build at a time, three network transfers. */
  readonly pools?: Readonly<Record<string, number>>;
}

export const DEFAULT_PUBLISH_DIR = '/var/lib/vz/template/iso';
const DEFAULT_POOLS = { packer: 1, network: 3 };

export type ImagePipeline = (context: ConfigContext) => EngineConfig;

export function defineImagePipeline<const B extends string, const I extends string, const S extends string = never>(
  config: PipelineConfig<B, I, S>,
): ImagePipeline {
  checkConfigShape(pipelineConfigSchema, config);
  validateNames(config);
  return (context) => expand(config as PipelineConfig<string, string, string>, context);
}

function validateNames(config: PipelineConfig<string, string, string>): void {
  const rule = 'use lower-case letters, digits, dots and dashes, starting with a letter or digit';
  for (const name of Object.keys(config.images)) {
    if (!isValidImageName(name)) throw new Failure('config', `image name "${name}" is invalid: ${rule}`);
    const base = (config.images as Record<string, ImageDecl<string>>)[name]!.base;
    if (!(base in config.bases)) throw new Failure('config', `image "${name}" uses base "${base}", which is not declared in bases`);
  }
  for (const name of Object.keys(config.bases)) {
    if (!isValidImageName(name)) throw new Failure('config', `base name "${name}" is invalid: ${rule}`);
  }
  // The rules the CLI and the stores apply to these names, applied when the config loads.
  if (config.release?.tag !== undefined) checkTag(config.release.tag, 'release.tag', 'config');
  storeSettings(config.release, config.release?.tag ?? 'latest');
}

/** A config's declarations with every default applied, as the nodes are made from them. */
interface Pipeline {
  readonly config: PipelineConfig<string, string, string>;
  readonly images: Readonly<Record<string, ImageDecl<string>>>;
  readonly bases: Readonly<Record<string, BaseDecl<string>>>;
  readonly names: readonly string[];
  readonly publishDir: string;
  /** The release uploads and the remote cache use. */
  readonly tag: string;
  readonly templatesDir: string;
  readonly sharedDir: string;
  readonly catalog: ImageCatalog;
  readonly remoteCache: ImageRemoteCache | undefined;
  /** A base's cached file, relative to the root. */
  baseFile(base: string): string;
}

function expand(config: PipelineConfig<string, string, string>, project: ConfigContext): EngineConfig {
  const pipeline = resolvePipeline(config, project);
  const { names, images, tag } = pipeline;
  const nodes: NodeDef[] = [];
  const aliases: Record<string, NodeId[]> = {};
  for (const base of new Set(names.map((name) => images[name]!.base))) nodes.push(baseDownloadNode(pipeline, base));
  for (const name of names) {
    nodes.push(...imageNodes(pipeline, name));
    aliases[name] = [`${name}:checksum`];
    aliases[`${name}:download`] = [`${images[name]!.base}:download`];
  }
  nodes.push(...stepNodes((config.steps ?? {}) as Record<string, StepDecl<string>>));
  aliases.all = names.map((name) => `${name}:checksum`);
  aliases.publish = names.map((name) => `${name}:publish`);
  return {
    nodes,
    aliases,
    defaultTarget: 'all',
    pools: { ...DEFAULT_POOLS, ...(config.pools ?? {}) },
    flags: {
      offline: { description: 'do not check upstream base images; use the cached ones' },
      'refresh-base': { description: 're-download base images even when upstream is unchanged' },
      'no-remote-cache': { description: `build images even when release ${tag} holds them built from the same inputs` },
    },
    families: { upload: uploadFamily(pipeline) },
    planJobs: (mayRun) => imageMatrix(names, mayRun),
    commands: {
      verify: verifyCommand(pipeline.catalog, { provenance: localProvenanceCheck(pipeline.catalog) }),
      release: releaseCommand(pipeline.catalog),
      images: imagesCommand(pipeline.catalog),
      provenance: provenanceCommand(pipeline.catalog),
    },
  };
}

function resolvePipeline(config: PipelineConfig<string, string, string>, project: ConfigContext): Pipeline {
  const images = config.images as Record<string, ImageDecl<string>>;
  const bases = config.bases as Record<string, BaseDecl<string>>;
  const names = Object.keys(images);
  const publishDir = process.env.PIPELINE_PUBLISH_DIR || config.publishDir || DEFAULT_PUBLISH_DIR;
  const tag = config.release?.tag ?? 'latest';
  const templatesDir = config.templatesDir ?? 'templates';
  const sharedDir = config.sharedDir ?? 'shared';
  const baseFile = (base: string): string => bases[base]!.file ?? posix.join('cache', basename(new URL(bases[base]!.url).pathname));
  const catalog = createImageCatalog({
    project,
    names,
    publishDir,
    templatesDir,
    sharedDir,
    base: (name) => {
      const base = images[name]!.base;
      return { node: `${base}:download`, file: baseFile(base), url: bases[base]!.url, checksumsUrl: bases[base]!.checksumsUrl };
    },
    extraFiles: (name) => images[name]!.extraFiles ?? [],
    accelerator: (name) => images[name]!.accelerator ?? config.accelerator ?? 'kvm',
    release: storeSettings(config.release, tag),
  });
  const remoteCache = config.release?.remoteCache === false ? undefined : createRemoteCache(catalog, tag);
  return { config, images, bases, names, publishDir, tag, templatesDir, sharedDir, catalog, remoteCache, baseFile };
}

function baseDownloadNode(pipeline: Pipeline, base: string): NodeDef {
  const decl = pipeline.bases[base]!;
  return downloadNode({ id: `${base}:download`, url: decl.url, checksumsUrl: decl.checksumsUrl, file: pipeline.baseFile(base), deps: decl.deps ?? [] });
}

/** An image's build, checksum, publish and upload nodes. */
function imageNodes(pipeline: Pipeline, name: string): NodeDef[] {
  const { config, publishDir } = pipeline;
  const image = pipeline.images[name]!;
  const imageFile = posix.join('images', name, `${name}.qcow2`);
  const compression = image.compression ?? config.compression;
  return [
    imageBuildNode(pipeline, name),
    checksumNode({ name, imageFile }),
    publishNode({ name, imageFile, publishDir, ...(compression ? { compression } : {}) }),
    createUploadNode(pipeline.catalog, name, pipeline.tag),
  ];
}

function imageBuildNode(pipeline: Pipeline, name: string): NodeDef {
  const { config } = pipeline;
  const image = pipeline.images[name]!;
  const base = pipeline.bases[image.base]!;
  const file = pipeline.baseFile(image.base);
  const upstream = { url: base.url, checksumsUrl: base.checksumsUrl, file };
  const compression = image.compression ?? config.compression;
  return buildNode({
    name,
    baseNode: `${image.base}:download`,
    baseImage: file,
    templatesDir: pipeline.templatesDir,
    sharedDir: pipeline.sharedDir,
    accelerator: image.accelerator ?? config.accelerator ?? 'kvm',
    ...(compression ? { compression } : {}),
    ...(image.extraFiles ? { extraFiles: image.extraFiles } : {}),
    ...(image.caveat ? { caveat: image.caveat } : {}),
    ...(image.description ? { description: image.description } : {}),
    ...(pipeline.remoteCache ? { remoteCache: pipeline.remoteCache } : {}),
    // Packer checks the base against upstream's current SHA-512, so an upstream that moved
    // on since the download is caught (and re-downloaded once); offline, the build task
    // checks the cached file's own SHA-256 instead.
    baseChecksum: async (ctx) => {
      if (ctx.flags.offline === true) return undefined;
      try {
        return `sha512:${await fetchUpstreamSha512(upstream, ctx.signal)}`;
      } catch (error) {
        ctx.signal.throwIfAborted();
        ctx.log(`upstream checksum list unreachable (${error instanceof Error ? error.message : String(error)}); checking the cached base by its SHA-256`);
        return undefined;
      }
    },
    redownloadBase: async (ctx) => {
      await redownload(ctx, upstream);
    },
  });
}

/** `upload:{tag}`: every image's upload to that release (the config's own tag names the `{image}:upload` nodes). */
function uploadFamily(pipeline: Pipeline): TargetFamily {
  const { names, tag, catalog } = pipeline;
  return {
    usage: 'upload:{tag}',
    description: `every image's upload to release {tag} (upload:${tag})`,
    expand(argument) {
      checkTag(argument, `target upload:${argument}`);
      if (argument === tag) return { nodes: [], targets: names.map((name) => `${name}:upload`) };
      const extra = names.map((name) => ({ ...createUploadNode(catalog, name, argument), id: `${name}:upload@${argument}` }));
      return { nodes: extra, targets: extra.map((node) => node.id) };
    },
  };
}

/** `plan --json` jobs: one GitHub Actions matrix entry per image with a node that may run. */
function imageMatrix(names: readonly string[], mayRun: readonly NodeId[]): Json {
  const images = names.filter((name) => mayRun.some((id) => id.startsWith(`${name}:`)));
  return { include: images.map((image) => ({ image, target: `${image}:upload` })) };
}
