// The build task kind: `{name}:build` runs packer for templates/{name}/ on the downloaded
// base image, compresses the result once with qemu-img (zstd unless the config says
// zlib), and replaces images/{name}/{name}.qcow2 and image-version.txt only once
// everything succeeded. The engine writes .cache-key (tasks/cache-key.ts) after `run`
// returns; the task never does. The variables every template declares and the task
// passes (TEMPLATE_VARIABLES): docs/template-variables.md.
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, posix, relative, resolve } from 'node:path';
import { Failure, fsyncPath, makeScratchDir, type NodeDef, type NodeId, type TaskContext, toolTempDir } from '../src/index.ts';
import { checkBuildSetup } from './build-setup.ts';
import { chunkIndexObserver } from './store/delta/index-file.ts';
import { cacheKeyFile, templateKeyFiles } from './cache-key.ts';
import { checksumFileProblem } from './checksum.ts';
import { selfContainedProblem } from './image-check.ts';
import {
  ensurePackerInit,
  forgetPackerInit,
  isChecksumMismatch,
  lastMeaningfulLine,
  needsPackerInit,
  type PackerVersion,
  parsePackerVersion,
  runPackerBuild,
  supportsPlugins,
  templateTraits,
} from './packer.ts';
import { buildFactsPath, buildFactsText, gatherBuildFacts } from './provenance/build-facts.ts';
import { bundlePathBeside } from './provenance/local-files.ts';
import { compressArgs, convertCompressed, DEFAULT_COMPRESSION, type Compression } from './qemu-img.ts';
import type { ImageRemoteCache } from './remote-cache.ts';
import { isValidImageName } from './store/names.ts';

export const TEMPLATE_VARIABLES = [
  'base_image',
  'base_checksum',
  'output_directory',
  'image_name',
  'ssh_public_key',
  'ssh_private_key_file',
  'shared_dir',
  'accelerator',
] as const;
export type TemplateVariable = (typeof TEMPLATE_VARIABLES)[number];

export const PVE_CAVEAT = 'the key cannot see PVE repository state; use --force';

export interface BuildNodeOptions {
  /** Image name; the template is `{templatesDir}/{name}/`, the output `images/{name}/{name}.qcow2`. */
  readonly name: string;
  /** Id of the node that downloads the base image (the build depends on it). */
  readonly baseNode: NodeId;
  /** The base cloud image, relative to the root (`cache/debian-13-generic-amd64.qcow2`). */
  readonly baseImage: string;
  /** Relative to the root; default `templates` (the demo uses `templates` under demo/). */
  readonly templatesDir?: string;
  /** The repository's shared/ directory relative to the root; default `shared` (demo: `../shared`). */
  readonly sharedDir?: string;
  /** Further files the image's key covers, hashed after the template's and shared/'s six. */
  readonly extraFiles?: readonly string[];
  /** QEMU accelerator passed to the template; default `kvm`. */
  readonly accelerator?: string;
  /** qcow2 compression of the built image; default zstd (QEMU >= 5.1 reads it). */
  readonly compression?: Compression;
  /** Programs; defaults `packer` and `ssh-keygen` from PATH (qemu-img: tasks/qemu-img.ts). */
  readonly packer?: string;
  readonly sshKeygen?: string;
  /**
   * The device preflight checks when the template boots QEMU with KVM; default
   * `PIPELINE_KVM_DEVICE`, else `/dev/kvm`.
   */
  readonly kvmDevice?: string;
  /**
   * `base_checksum` for packer (`sha256:<hex>` or `sha512:<hex>`). A download kind that
   * knows the upstream checksum can pass that, so packer notices a cache that no longer
   * matches upstream. Absent, or resolving to undefined (offline): the SHA-256 of the
   * cached file.
   */
  readonly baseChecksum?: (ctx: TaskContext) => Promise<string | undefined>;
  /** Re-fetches the base image; called once when packer reports a checksum mismatch. */
  readonly redownloadBase?: (ctx: TaskContext) => Promise<void>;
  /**
   * Where an image built from the same inputs may already be (the release): fetched
   * instead of built, the base not downloaded. `redownloadBase` fetches the base when a
   * refused copy makes the build run after all.
   */
  readonly remoteCache?: ImageRemoteCache;
  /** What `explain` says the key cannot see; default for `pve-*` images: PVE_CAVEAT. */
  readonly caveat?: string;
  readonly description?: string;
}

export function buildNode(options: BuildNodeOptions): NodeDef {
  const layout = buildLayout(options);
  const { name, templateFile, outputImage, compression } = layout;
  const node: NodeDef = {
    id: `${name}:build`,
    kind: 'build',
    description: options.description ?? `packer build ${templateFile}`,
    deps: [options.baseNode],
    params: {
      name,
      templatesDir: layout.templatesDir,
      sharedDir: layout.sharedDir,
      baseImage: options.baseImage,
      accelerator: layout.accelerator,
      compression,
    },
    files: templateKeyFiles(layout.keyOptions),
    outputs: [outputImage, layout.outputVersion],
    sha256Outputs: [outputImage],
    // The image's chunk index (for seeded fetches of it) from the read that hashes it.
    observeOutput: (path, absolutePath) => (path === outputImage ? chunkIndexObserver(absolutePath) : undefined),
    pool: 'packer',
    logName: name,
    key: cacheKeyFile(layout.keyOptions),
    ...(layout.caveat ? { caveat: layout.caveat } : {}),
    preflight: (context) => checkBuildSetup(layout, context),
    // An image whose .cache-key matches but that we have no stamp for (built before this
    // tree's .pipeline/ existed) is taken only when its bytes match the .sha256 beside it.
    async adopt({ root, hasher, signal }) {
      const problem = await checksumFileProblem(root, hasher, outputImage);
      if (problem) return { adopt: false, reason: problem };
      // Whoever made it, an image that reads another file is never taken as a build's output.
      const foreign = await selfContainedProblem(resolve(root, outputImage), signal);
      if (foreign) return { adopt: false, reason: `${outputImage} is not a self-contained qcow2 image: ${foreign}` };
      return { adopt: true, reason: `${name}.qcow2 matches its .sha256` };
    },
    async describeRun() {
      return `would packer build ${templateFile} on ${options.baseImage}, then qemu-img convert ${compressArgs(compression).join(' ')} into ${outputImage}`;
    },
    run: (ctx) => runBuild(layout, ctx),
  };
  if (!options.remoteCache) return node;
  const fetchBase = async (ctx: TaskContext): Promise<void> => {
    if (!options.redownloadBase) throw new Failure('task', `${options.baseImage} is not cached and ${name}:build has no way to fetch it`);
    await options.redownloadBase(ctx);
  };
  return { ...node, remoteCache: options.remoteCache.forBuild({ name, compression, baseImage: options.baseImage, fetchBase, build: node }) };
}

/** Where an image's build reads and writes (relative to the root), and how it builds: the options with their defaults. */
export interface BuildLayout {
  readonly options: BuildNodeOptions;
  readonly name: string;
  readonly templatesDir: string;
  readonly sharedDir: string;
  readonly accelerator: string;
  readonly compression: Compression;
  readonly keyOptions: Parameters<typeof cacheKeyFile>[0];
  readonly templateDir: string;
  readonly templateFile: string;
  readonly imageDir: string;
  readonly outputImage: string;
  readonly outputVersion: string;
  readonly caveat: string | undefined;
  readonly packer: string;
  readonly sshKeygen: string;
}

function buildLayout(options: BuildNodeOptions): BuildLayout {
  const { name } = options;
  if (!isValidImageName(name))
    throw new Error(`invalid image name "${name}": use lower-case letters, digits, dots and dashes, starting with a letter or digit`);
  const templatesDir = options.templatesDir ?? 'templates';
  const sharedDir = options.sharedDir ?? 'shared';
  const templateDir = posix.join(templatesDir, name);
  const imageDir = posix.join('images', name);
  return {
    options,
    name,
    templatesDir,
    sharedDir,
    accelerator: options.accelerator ?? 'kvm',
    compression: options.compression ?? DEFAULT_COMPRESSION,
    keyOptions: { name, templatesDir, sharedDir, baseImage: options.baseImage, ...(options.extraFiles ? { extraFiles: options.extraFiles } : {}) },
    templateDir,
    templateFile: posix.join(templateDir, 'template.pkr.hcl'),
    imageDir,
    outputImage: posix.join(imageDir, `${name}.qcow2`),
    outputVersion: posix.join(imageDir, 'image-version.txt'),
    caveat: options.caveat ?? (name.startsWith('pve-') ? PVE_CAVEAT : undefined),
    packer: options.packer ?? 'packer',
    sshKeygen: options.sshKeygen ?? 'ssh-keygen',
  };
}

/** Absolute paths of one build run, and its scratch space (removed at its end). */
interface BuildRun {
  readonly ctx: TaskContext;
  readonly templateFile: string;
  readonly sharedDir: string;
  readonly baseImage: string;
  readonly imageDir: string;
  readonly image: string;
  readonly version: string;
  /** packer's output_directory: a temp name in the image directory. */
  readonly staging: string;
  /** This run's scratch dir under .pipeline/: the build key, packer's own temp files. */
  readonly scratch: string;
  readonly toolTemp: string;
}

async function runBuild(layout: BuildLayout, ctx: TaskContext): Promise<void> {
  const { root } = ctx;
  const startedOn = new Date();
  const imageDir = resolve(root, layout.imageDir);
  await mkdir(imageDir, { recursive: true });
  // The build key and packer's own temp files (its log, shell-local scripts) live in a
  // scratch dir of this run under .pipeline/, never in /tmp: removed here, or by the
  // next run when this one is killed.
  const scratch = await makeScratchDir(root, `build-${layout.name}`);
  const run: BuildRun = {
    ctx,
    templateFile: resolve(root, layout.templateFile),
    sharedDir: resolve(root, layout.sharedDir),
    baseImage: resolve(root, layout.options.baseImage),
    imageDir,
    image: resolve(root, layout.outputImage),
    version: resolve(root, layout.outputVersion),
    // Named like every temp, so a run killed meanwhile leaves nothing the next run keeps.
    staging: ctx.tempPath(join(imageDir, 'staging')),
    scratch,
    // Under the scratch dir too, unless the project's path is too deep for packer's plugin sockets.
    toolTemp: await toolTempDir(join(scratch, 'tmp')),
  };
  const temps: string[] = [];
  try {
    const packer = await runPacker(layout, run);
    const versionText = await stagedVersionText(layout.name, run.staging);
    const facts = await gatherBuildFacts({
      root,
      packer: layout.packer,
      packerVersion: packer.version,
      templateText: packer.templateText,
      accelerator: layout.accelerator,
      startedOn,
      env: process.env,
      exec: ctx.exec,
    });
    await installOutputs(layout, run, buildFactsText(facts), temps);
    ctx.log(`built ${layout.outputImage} (${versionText.trim().split('\n').join(', ')})`);
  } finally {
    await Promise.all([
      rm(run.staging, { recursive: true, force: true }),
      rm(run.scratch, { recursive: true, force: true }),
      rm(run.toolTemp, { recursive: true, force: true }),
      ...temps.map((temp) => rm(temp, { force: true })),
    ]);
  }
}

/** The template and the packer version a build ran with (what its provenance records). */
interface PackerRun {
  readonly templateText: string;
  readonly version: PackerVersion;
}

/**
 * `packer build` into the staging directory, after `packer init` when the template needs
 * it. A checksum mismatch (upstream replaced the base under it) re-downloads the base and
 * retries once.
 */
async function runPacker(layout: BuildLayout, run: BuildRun): Promise<PackerRun> {
  const { ctx } = run;
  const { options, name, packer } = layout;
  const templateText = await readFile(run.templateFile, 'utf8');
  const versionResult = await ctx.exec(packer, ['version'], { nothrow: true });
  const version = parsePackerVersion(versionResult.stdout);
  if (!version) throw new Failure('task', `cannot run ${packer} (packer version: exit ${versionResult.exitCode})`);
  const traits = templateTraits(templateText);
  if (traits.requiresPlugins && supportsPlugins(version)) {
    await ensurePackerInit(ctx, { packer, templateFile: run.templateFile, templateText, version, tmpDir: run.toolTemp });
  }
  const keyDir = join(run.scratch, 'ssh');
  await mkdir(keyDir, { mode: 0o700 });
  const sshKey = await buildKeyPair(ctx, layout.sshKeygen, keyDir, name);
  let redownloaded = false;
  for (;;) {
    const variables: Record<TemplateVariable, string> = {
      base_image: run.baseImage,
      base_checksum: (await options.baseChecksum?.(ctx)) ?? (await sha256Checksum(ctx, run.baseImage)),
      output_directory: run.staging,
      image_name: name,
      ssh_public_key: sshKey.publicKey,
      ssh_private_key_file: sshKey.privateKeyFile,
      shared_dir: run.sharedDir,
      accelerator: layout.accelerator,
    };
    const result = await runPackerBuild(ctx, {
      packer,
      templateFile: run.templateFile,
      variables,
      cwd: resolve(ctx.root, layout.templateDir),
      tmpDir: run.toolTemp,
    });
    if (result.exitCode === 0) return { templateText, version };
    if (isChecksumMismatch(result) && !redownloaded && options.redownloadBase) {
      redownloaded = true;
      ctx.log(`base image ${options.baseImage} does not match its checksum: downloading it again and retrying once`);
      await rm(run.staging, { recursive: true, force: true });
      await options.redownloadBase(ctx);
      continue;
    }
    if (needsPackerInit(result)) await forgetPackerInit(ctx.root, templateText, version);
    const mismatch = isChecksumMismatch(result) ? ` (base image ${options.baseImage} does not match its checksum)` : '';
    throw new Failure(
      'task',
      `packer build failed for ${layout.templateFile}${mismatch} (exit ${result.exitCode}): ${lastMeaningfulLine(result) ?? 'see the log'}`,
    );
  }
}

/** What the template wrote into image-version.txt, once both of its outputs are there. */
async function stagedVersionText(name: string, staging: string): Promise<string> {
  await requireFile(join(staging, `${name}.qcow2`), `packer finished but wrote no ${name}.qcow2 into output_directory`);
  await requireFile(join(staging, 'image-version.txt'), 'packer finished but wrote no image-version.txt (detect-versions.sh did not run?)');
  const versionText = await readFile(join(staging, 'image-version.txt'), 'utf8');
  if (!/^DEBIAN_VERSION=\S+$/m.test(versionText)) {
    throw new Failure('task', `image-version.txt has no DEBIAN_VERSION: ${JSON.stringify(versionText.slice(0, 200))}`);
  }
  return versionText;
}

/**
 * Compresses the staged image beside the old one, then replaces the old outputs and the
 * build facts (`temps` collects what to remove on failure).
 */
async function installOutputs(layout: BuildLayout, run: BuildRun, factsText: string, temps: string[]): Promise<void> {
  const { ctx } = run;
  const tempImage = ctx.tempPath(run.image);
  const tempVersion = ctx.tempPath(run.version);
  // What built these bytes, for the provenance an upload signs (tasks/provenance/).
  const factsPath = buildFactsPath(run.imageDir);
  const tempFacts = ctx.tempPath(factsPath);
  temps.push(tempImage, tempVersion, tempFacts);
  ctx.status(`compressing (${layout.compression})`);
  await convertCompressed(ctx, join(run.staging, `${layout.name}.qcow2`), tempImage, { compression: layout.compression });
  await copyFile(join(run.staging, 'image-version.txt'), tempVersion);
  await writeFile(tempFacts, factsText);
  await Promise.all([fsyncPath(tempImage), fsyncPath(tempVersion), fsyncPath(tempFacts)]);
  // From here on the old outputs go: the engine drops the stamp and .cache-key first,
  // so an interruption between the renames leaves a stale node, never a wrong key.
  await ctx.beginCommit();
  await rename(tempImage, run.image);
  await rename(tempVersion, run.version);
  await rename(tempFacts, factsPath);
  // A bundle of the bytes this build replaced says nothing of these.
  await rm(bundlePathBeside(run.image, layout.name), { force: true });
  await fsyncPath(run.imageDir);
}

interface KeyPair {
  readonly publicKey: string;
  readonly privateKeyFile: string;
}

/** SSH_KEY_FILE when set (its public half derived), else a fresh ed25519 pair in keyDir. */
async function buildKeyPair(ctx: TaskContext, sshKeygen: string, keyDir: string, name: string): Promise<KeyPair> {
  const quiet = { onLine: () => undefined, nothrow: true } as const;
  const given = process.env.SSH_KEY_FILE;
  if (given) {
    const privateKeyFile = resolve(given);
    const result = await ctx.exec(sshKeygen, ['-y', '-f', privateKeyFile], quiet);
    if (result.exitCode !== 0) {
      throw new Failure(
        'task',
        `SSH_KEY_FILE=${given}: cannot read the key (${result.stderr.trim() || `ssh-keygen exit ${result.exitCode}`}); it must be an unencrypted private key`,
      );
    }
    return { publicKey: result.stdout.trim(), privateKeyFile };
  }
  const privateKeyFile = join(keyDir, 'id_ed25519');
  const result = await ctx.exec(sshKeygen, ['-q', '-t', 'ed25519', '-N', '', '-C', `pipeline-build-${name}`, '-f', privateKeyFile], quiet);
  if (result.exitCode !== 0) throw new Failure('task', `ssh-keygen failed: ${result.stderr.trim() || `exit ${result.exitCode}`}`);
  return { publicKey: (await readFile(`${privateKeyFile}.pub`, 'utf8')).trim(), privateKeyFile };
}

async function sha256Checksum(ctx: TaskContext, baseImage: string): Promise<string> {
  let digest: Awaited<ReturnType<typeof ctx.hasher.hash>>;
  try {
    digest = await ctx.hasher.hash(baseImage, { sha256: true, onProgress: (done, total) => ctx.progress(done, total) });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new Failure('task', `base image missing: ${relative(ctx.root, baseImage)}`);
    throw error;
  }
  if (!digest.sha256) throw new Failure('task', `no SHA-256 for ${baseImage}`);
  return `sha256:${digest.sha256}`;
}

async function requireFile(path: string, message: string): Promise<void> {
  try {
    if ((await stat(path)).isFile()) return;
  } catch {
    // reported below
  }
  throw new Failure('task', message);
}
