// `defineConfig` for image pipelines: bases, images and extra steps become engine nodes
//
//   {base}:download -> {image}:build -> {image}:checksum -> {image}:publish
//                                                        -> {image}:upload
//
// with the targets of SPEC "Targets" as aliases and `upload:{tag}` as a target family.
// References are typed: an image's base, and a step's dependency, must be declared.
import { basename, posix } from 'node:path';
import { type EngineConfig, Failure, type Json, type NodeDef, type NodeId, type StepDecl, stepNodes } from '../src/index.ts';
// Not through src/index.ts: the engine's index stays free of zod, which a steps config never loads.
import { checkConfigShape } from '../src/config-validate.ts';
import { buildNode } from './build.ts';
import { createCatalog } from './catalog.ts';
import { checksumNode } from './checksum.ts';
import { downloadNode, fetchUpstreamSha512, redownload } from './download.ts';
import { imagesCommand } from './images.ts';
import { releaseCommand } from './release.ts';
import { storeSettings, type ReleaseDecl } from './store/backends.ts';
import { checkTag } from './store/names.ts';
import { createUploadNode } from './upload.ts';
import { publishNode } from './publish.ts';
import { createRemoteCache } from './remote-cache.ts';
import { pipelineConfigSchema } from './config-schema.ts';
import { provenanceCommand } from './provenance/command.ts';
import { localProvenanceCheck } from './provenance/local-check.ts';
import type { Compression } from './qemu-img.ts';
import { verifyCommand } from './verify.ts';

export const IMAGE_NAME = /^[a-z0-9][a-z0-9.-]*$/;
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
  /** More files the image's cache key covers, after the seed's six. */
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

export type ImagePipeline = (context: { readonly root: string }) => EngineConfig;

export function defineConfig<const B extends string, const I extends string, const S extends string = never>(config: PipelineConfig<B, I, S>): ImagePipeline {
  checkConfigShape(pipelineConfigSchema, config);
  validateNames(config);
  return ({ root }) => expand(config as PipelineConfig<string, string, string>, root);
}

function validateNames(config: PipelineConfig<string, string, string>): void {
  for (const name of Object.keys(config.images)) {
    if (!IMAGE_NAME.test(name))
      throw new Failure('config', `image name "${name}" is invalid: use lower-case letters, digits, dots and dashes, starting with a letter or digit`);
    const base = (config.images as Record<string, ImageDecl<string>>)[name]!.base;
    if (!(base in config.bases)) throw new Failure('config', `image "${name}" uses base "${base}", which is not declared in bases`);
  }
  for (const name of Object.keys(config.bases)) {
    if (!IMAGE_NAME.test(name)) throw new Failure('config', `base name "${name}" is invalid: use ${IMAGE_NAME.source}`);
  }
  // The rules the CLI and the stores apply to these names, applied when the config loads.
  if (config.release?.tag !== undefined) checkTag(config.release.tag, 'release.tag', 'config');
  storeSettings(config.release, config.release?.tag ?? 'latest');
}

function expand(config: PipelineConfig<string, string, string>, root: string): EngineConfig {
  const images = config.images as Record<string, ImageDecl<string>>;
  const bases = config.bases as Record<string, BaseDecl<string>>;
  const names = Object.keys(images);
  const publishDir = process.env.PIPELINE_PUBLISH_DIR || config.publishDir || DEFAULT_PUBLISH_DIR;
  const tag = config.release?.tag ?? 'latest';
  const templatesDir = config.templatesDir ?? 'templates';
  const sharedDir = config.sharedDir ?? 'shared';
  const baseFile = (base: string): string => bases[base]!.file ?? posix.join('cache', basename(new URL(bases[base]!.url).pathname));

  const catalog = createCatalog({
    root,
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
  const nodes: NodeDef[] = [];
  const aliases: Record<string, NodeId[]> = {};
  const usedBases = new Set(names.map((name) => images[name]!.base));
  for (const base of usedBases) {
    const decl = bases[base]!;
    nodes.push(downloadNode({ id: `${base}:download`, url: decl.url, checksumsUrl: decl.checksumsUrl, file: baseFile(base), deps: decl.deps ?? [] }));
  }
  for (const name of names) {
    const image = images[name]!;
    const base = bases[image.base]!;
    const file = baseFile(image.base);
    const imageFile = posix.join('images', name, `${name}.qcow2`);
    const compression = image.compression ?? config.compression;
    nodes.push(
      buildNode({
        name,
        baseNode: `${image.base}:download`,
        baseImage: file,
        templatesDir,
        sharedDir,
        accelerator: image.accelerator ?? config.accelerator ?? 'kvm',
        ...(compression ? { compression } : {}),
        ...(image.extraFiles ? { extraFiles: image.extraFiles } : {}),
        ...(image.caveat ? { caveat: image.caveat } : {}),
        ...(image.description ? { description: image.description } : {}),
        ...(remoteCache ? { remoteCache } : {}),
        // Packer checks the base against upstream's current SHA-512, so an upstream that
        // moved on since the download is caught (and re-downloaded once) as the shell
        // script's --auto-update did; offline, the build task checks the cached file's own
        // SHA-256 instead.
        baseChecksum: async (ctx) => {
          if (ctx.flags.offline === true) return undefined;
          try {
            return `sha512:${await fetchUpstreamSha512({ url: base.url, checksumsUrl: base.checksumsUrl, file }, ctx.signal)}`;
          } catch (error) {
            ctx.signal.throwIfAborted();
            ctx.log(`upstream checksum list unreachable (${error instanceof Error ? error.message : String(error)}); checking the cached base by its SHA-256`);
            return undefined;
          }
        },
        redownloadBase: async (ctx) => {
          await redownload(ctx, { url: base.url, checksumsUrl: base.checksumsUrl, file });
        },
      }),
      checksumNode({ name, imageFile }),
      publishNode({ name, imageFile, publishDir, ...(compression ? { compression } : {}) }),
      createUploadNode(catalog, name, tag),
    );
    aliases[name] = [`${name}:checksum`];
    aliases[`${name}:download`] = [`${image.base}:download`];
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
    families: {
      upload: {
        usage: 'upload:{tag}',
        description: `every image's upload to release {tag} (upload:${tag})`,
        expand(argument) {
          checkTag(argument, `target upload:${argument}`);
          if (argument === tag) return { nodes: [], targets: names.map((name) => `${name}:upload`) };
          const extra = names.map((name) => ({ ...createUploadNode(catalog, name, argument), id: `${name}:upload@${argument}` }));
          return { nodes: extra, targets: extra.map((node) => node.id) };
        },
      },
    },
    planJobs: (mayRun) => imageMatrix(names, mayRun),
    commands: {
      verify: verifyCommand(catalog, { provenance: localProvenanceCheck(catalog) }),
      release: releaseCommand(catalog),
      images: imagesCommand(catalog),
      provenance: provenanceCommand(catalog),
    },
  };
}

/** `plan --json` jobs: one GitHub Actions matrix entry per image with a node that may run. */
function imageMatrix(names: readonly string[], mayRun: readonly NodeId[]): Json {
  const images = names.filter((name) => mayRun.some((id) => id.startsWith(`${name}:`)));
  return { include: images.map((image) => ({ image, target: `${image}:upload` })) };
}
