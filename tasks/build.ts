// The build task kind: `{name}:build` runs packer for templates/{name}/ on the downloaded
// base image, compresses the result once with qemu-img (zstd unless the config says zlib), and replaces images/{name}/{name}.qcow2
// and image-version.txt only once everything succeeded. The engine writes .cache-key
// (tasks/cache-key.ts) after `run` returns; the task never does.
//
// Variable contract: every template (templates/*, demo/templates/*) declares exactly these
// variables, and the task passes all of them with `-var` (packer refuses a -var it does not
// declare, and one without a default that is not passed):
//
//   base_image            absolute path of the base cloud image in cache/ (packer only verifies it)
//   base_checksum         "sha256:<hex>" or "sha512:<hex>" of base_image
//   output_directory      absolute staging directory (a temp dir in images/{name}/); the template
//                         writes {image_name}.qcow2 and image-version.txt into it
//   image_name            the image name ({name})
//   ssh_public_key        public key of the ephemeral build key pair (cloud-init seed)
//   ssh_private_key_file  its private key file
//   shared_dir            absolute path of the repository's shared/ directory
//   accelerator           QEMU accelerator; default "kvm" in the templates, always passed
//
// Templates may declare more variables, with defaults (disk_size, memory, cpus).
import { chunkIndexObserver } from './store/delta/index-file.ts';
import { constants as fsConstants } from 'node:fs';
import { access, copyFile, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { delimiter, join, posix, relative, resolve } from 'node:path';
import { Failure, fsyncPath, makeScratchDir, type NodeDef, type NodeId, type PreflightContext, type TaskContext, toolTempDir } from '../src/index.ts';
import { cacheKeyFile, templateKeyFiles } from './cache-key.ts';
import { checksumFileProblem } from './checksum.ts';
import {
  ensurePackerInit,
  forgetPackerInit,
  installedPackerVersion,
  isChecksumMismatch,
  lastMeaningfulLine,
  needsPackerInit,
  parsePackerVersion,
  runPackerBuild,
  supportsPlugins,
  templateTraits,
} from './packer.ts';
import { buildFactsPath, buildFactsText, gatherBuildFacts } from './provenance/build-facts.ts';
import { bundlePathBeside } from './provenance/local-files.ts';
import { checkQemuImg, compressArgs, convertCompressed, DEFAULT_COMPRESSION, type Compression } from './qemu-img.ts';
import type { ImageRemoteCache } from './remote-cache.ts';

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

const IMAGE_NAME = /^[a-z0-9][a-z0-9.-]*$/;
const ISO_TOOLS = ['xorriso', 'mkisofs', 'genisoimage', 'oscdimg'];

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
  /** Further files the image's key covers, hashed after the seed's six. */
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
  const { name } = options;
  if (!IMAGE_NAME.test(name)) throw new Error(`invalid image name "${name}": use ${IMAGE_NAME.source}`);
  const templatesDir = options.templatesDir ?? 'templates';
  const sharedDir = options.sharedDir ?? 'shared';
  const accelerator = options.accelerator ?? 'kvm';
  const compression = options.compression ?? DEFAULT_COMPRESSION;
  const keyOptions = {
    name,
    templatesDir,
    sharedDir,
    baseImage: options.baseImage,
    ...(options.extraFiles ? { extraFiles: options.extraFiles } : {}),
  };
  const templateDir = posix.join(templatesDir, name);
  const templateFile = posix.join(templateDir, 'template.pkr.hcl');
  const imageDir = posix.join('images', name);
  const outputImage = posix.join(imageDir, `${name}.qcow2`);
  const outputVersion = posix.join(imageDir, 'image-version.txt');
  const caveat = options.caveat ?? (name.startsWith('pve-') ? PVE_CAVEAT : undefined);
  const tools = {
    packer: options.packer ?? 'packer',
    sshKeygen: options.sshKeygen ?? 'ssh-keygen',
  };

  const node: NodeDef = {
    id: `${name}:build`,
    kind: 'build',
    description: options.description ?? `packer build ${templateFile}`,
    deps: [options.baseNode],
    params: { name, templatesDir, sharedDir, baseImage: options.baseImage, accelerator, compression },
    files: templateKeyFiles(keyOptions),
    outputs: [outputImage, outputVersion],
    sha256Outputs: [outputImage],
    // The image's chunk index (for seeded fetches of it) from the read that hashes it.
    observeOutput: (path, absolutePath) => (path === outputImage ? chunkIndexObserver(absolutePath) : undefined),
    pool: 'packer',
    logName: name,
    key: cacheKeyFile(keyOptions),
    ...(caveat ? { caveat } : {}),

    async preflight(context: PreflightContext) {
      await checkTemplateDir(context.root, templateDir);
      const text = await readFile(resolve(context.root, templateFile), 'utf8');
      const traits = templateTraits(text);
      const version = await installedPackerVersion(tools.packer, context.signal);
      if (!version) {
        throw new Failure(
          'setup',
          `packer not found (${tools.packer}): install packer >= 1.7 from HashiCorp's apt repository (https://developer.hashicorp.com/packer/install)`,
        );
      }
      if (traits.requiresPlugins && !supportsPlugins(version)) {
        throw new Failure(
          'setup',
          `packer ${version.text} cannot build ${templateFile} (required_plugins needs packer >= 1.7; Debian ships 1.6.6): install packer from HashiCorp's apt repository (https://apt.releases.hashicorp.com); the build then runs packer init for the qemu plugin`,
        );
      }
      await checkQemuImg(compression, 'compress built images', context.signal);
      if (traits.usesQemu && accelerator === 'kvm') await checkKvm(options.kvmDevice ?? (process.env.PIPELINE_KVM_DEVICE || '/dev/kvm'));
      if (traits.usesQemu && traits.buildsCd && !(await anyOnPath(ISO_TOOLS))) {
        throw new Failure(
          'setup',
          `packer needs xorriso (or mkisofs/genisoimage) to write the cloud-init seed CD for ${templateFile}: apt-get install xorriso`,
        );
      }
    },

    // An image whose .cache-key matches but that we have no stamp for (the shell build
    // script made it) is taken only when its bytes match the .sha256 beside it.
    async adopt({ root, hasher }) {
      const problem = await checksumFileProblem(root, hasher, outputImage);
      return problem ? { adopt: false, reason: problem } : { adopt: true, reason: `${name}.qcow2 matches its .sha256` };
    },

    async describeRun() {
      return `would packer build ${templateFile} on ${options.baseImage}, then qemu-img convert ${compressArgs(compression).join(' ')} into ${outputImage}`;
    },

    async run(ctx: TaskContext) {
      const root = ctx.root;
      const startedOn = new Date();
      const paths = {
        templateFile: resolve(root, templateFile),
        sharedDir: resolve(root, sharedDir),
        baseImage: resolve(root, options.baseImage),
        imageDir: resolve(root, imageDir),
        image: resolve(root, outputImage),
        version: resolve(root, outputVersion),
      };
      await mkdir(paths.imageDir, { recursive: true });
      // Named like every temp, so a run killed meanwhile leaves nothing the next run keeps.
      const staging = ctx.tempPath(join(paths.imageDir, 'staging'));
      // The build key and packer's own temp files (its log, shell-local scripts) live in a
      // scratch dir of this run under .pipeline/, never in /tmp: removed here, or by the
      // next run when this one is killed.
      const scratch = await makeScratchDir(root, `build-${name}`);
      const keyDir = join(scratch, 'ssh');
      await mkdir(keyDir, { mode: 0o700 });
      // Under the scratch dir too, unless the project's path is too deep for packer's plugin sockets.
      const toolTemp = await toolTempDir(join(scratch, 'tmp'));
      const temps: string[] = [];
      try {
        const templateText = await readFile(paths.templateFile, 'utf8');
        const versionResult = await ctx.exec(tools.packer, ['version'], { nothrow: true });
        const version = parsePackerVersion(versionResult.stdout);
        if (!version) throw new Failure('task', `cannot run ${tools.packer} (packer version: exit ${versionResult.exitCode})`);
        const traits = templateTraits(templateText);
        const initOptions = { packer: tools.packer, templateFile: paths.templateFile, templateText, version, tmpDir: toolTemp };
        if (traits.requiresPlugins && supportsPlugins(version)) await ensurePackerInit(ctx, initOptions);

        const sshKey = await buildKeyPair(ctx, tools.sshKeygen, keyDir, name);
        const checksumOf = async (c: TaskContext): Promise<string> => (await options.baseChecksum?.(c)) ?? sha256Checksum(c, paths.baseImage);
        let redownloaded = false;
        for (;;) {
          const variables: Record<TemplateVariable, string> = {
            base_image: paths.baseImage,
            base_checksum: await checksumOf(ctx),
            output_directory: staging,
            image_name: name,
            ssh_public_key: sshKey.publicKey,
            ssh_private_key_file: sshKey.privateKeyFile,
            shared_dir: paths.sharedDir,
            accelerator,
          };
          const result = await runPackerBuild(ctx, {
            packer: tools.packer,
            templateFile: paths.templateFile,
            variables,
            cwd: resolve(root, templateDir),
            tmpDir: toolTemp,
          });
          if (result.exitCode === 0) break;
          if (isChecksumMismatch(result) && !redownloaded && options.redownloadBase) {
            redownloaded = true;
            ctx.log(`base image ${options.baseImage} does not match its checksum: downloading it again and retrying once`);
            await rm(staging, { recursive: true, force: true });
            await options.redownloadBase(ctx);
            continue;
          }
          if (needsPackerInit(result)) await forgetPackerInit(root, templateText, version);
          const mismatch = isChecksumMismatch(result) ? ` (base image ${options.baseImage} does not match its checksum)` : '';
          throw new Failure(
            'task',
            `packer build failed for ${templateFile}${mismatch} (exit ${result.exitCode}): ${lastMeaningfulLine(result) ?? 'see the log'}`,
          );
        }

        const stagedImage = join(staging, `${name}.qcow2`);
        const stagedVersion = join(staging, 'image-version.txt');
        await requireFile(stagedImage, `packer finished but wrote no ${name}.qcow2 into output_directory`);
        await requireFile(stagedVersion, 'packer finished but wrote no image-version.txt (detect-versions.sh did not run?)');
        const versionText = await readFile(stagedVersion, 'utf8');
        if (!/^DEBIAN_VERSION=\S+$/m.test(versionText)) {
          throw new Failure('task', `image-version.txt has no DEBIAN_VERSION: ${JSON.stringify(versionText.slice(0, 200))}`);
        }

        const tempImage = ctx.tempPath(paths.image);
        const tempVersion = ctx.tempPath(paths.version);
        // What built these bytes, for the provenance an upload signs (tasks/provenance/).
        const factsPath = buildFactsPath(paths.imageDir);
        const tempFacts = ctx.tempPath(factsPath);
        temps.push(tempImage, tempVersion, tempFacts);
        ctx.status(`compressing (${compression})`);
        await convertCompressed(ctx, stagedImage, tempImage, { compression });
        await copyFile(stagedVersion, tempVersion);
        const facts = await gatherBuildFacts({
          root,
          packer: tools.packer,
          packerVersion: version,
          templateText,
          accelerator,
          startedOn,
          env: process.env,
          signal: ctx.signal,
        });
        await writeFile(tempFacts, buildFactsText(facts));
        await Promise.all([fsyncPath(tempImage), fsyncPath(tempVersion), fsyncPath(tempFacts)]);

        // From here on the old outputs go: the engine drops the stamp and .cache-key first,
        // so an interruption between the renames leaves a stale node, never a wrong key.
        await ctx.beginCommit();
        await rename(tempImage, paths.image);
        await rename(tempVersion, paths.version);
        await rename(tempFacts, factsPath);
        // A bundle of the bytes this build replaced says nothing of these.
        await rm(bundlePathBeside(paths.image, name), { force: true });
        await fsyncPath(paths.imageDir);
        ctx.log(`built ${outputImage} (${versionText.trim().split('\n').join(', ')})`);
      } finally {
        await Promise.all([
          rm(staging, { recursive: true, force: true }),
          rm(scratch, { recursive: true, force: true }),
          rm(toolTemp, { recursive: true, force: true }),
          ...temps.map((temp) => rm(temp, { force: true })),
        ]);
      }
    },
  };
  if (!options.remoteCache) return node;
  const fetchBase = async (ctx: TaskContext): Promise<void> => {
    if (!options.redownloadBase) throw new Failure('task', `${options.baseImage} is not cached and ${name}:build has no way to fetch it`);
    await options.redownloadBase(ctx);
  };
  return { ...node, remoteCache: options.remoteCache.forBuild({ name, compression, baseImage: options.baseImage, fetchBase, build: node }) };
}

async function checkTemplateDir(root: string, templateDir: string): Promise<void> {
  const missing: string[] = [];
  for (const file of ['template.pkr.hcl', 'cleanup.sh']) {
    try {
      await access(resolve(root, templateDir, file), fsConstants.R_OK);
    } catch {
      missing.push(posix.join(templateDir, file));
    }
  }
  if (missing.length > 0) {
    throw new Failure('setup', `${missing.join(' and ')} missing: every template directory needs template.pkr.hcl and cleanup.sh`);
  }
}

async function checkKvm(device: string): Promise<void> {
  try {
    await access(device, fsConstants.R_OK | fsConstants.W_OK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Failure(
        'setup',
        `${device} missing: enable hardware virtualisation (nested virtualisation on a VM) and load kvm_intel or kvm_amd, or build with accelerator "tcg" (much slower)`,
      );
    }
    throw new Failure(
      'setup',
      `${device} is not accessible to ${userInfo().username}: add the user to the kvm group (usermod -aG kvm ${userInfo().username}) and log in again`,
    );
  }
}

async function findOnPath(program: string): Promise<string | undefined> {
  const candidates = program.includes('/')
    ? [program]
    : (process.env.PATH ?? '')
        .split(delimiter)
        .filter(Boolean)
        .map((dir) => join(dir, program));
  for (const candidate of candidates) {
    try {
      await access(candidate, fsConstants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

async function anyOnPath(programs: readonly string[]): Promise<boolean> {
  for (const program of programs) if (await findOnPath(program)) return true;
  return false;
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
