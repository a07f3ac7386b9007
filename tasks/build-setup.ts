// The build's setup checks, run before any work when the build will run: the template's
// files, a packer that can build the template, qemu-img, and KVM and an ISO tool when the
// template boots QEMU. Each failure is one line saying what to install or change.
import { constants as fsConstants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { delimiter, join, posix, resolve } from 'node:path';
import { Failure, type PreflightContext } from '../src/index.ts';
import type { BuildLayout } from './build.ts';
import { installedPackerVersion, supportsPlugins, templateTraits } from './packer.ts';
import { checkQemuImg } from './qemu-img.ts';

const ISO_TOOLS = ['xorriso', 'mkisofs', 'genisoimage', 'oscdimg'];

/** The build's setup checks: the template's files, a packer that can build it, qemu-img, KVM and an ISO tool when the template needs them. */
export async function checkBuildSetup(layout: BuildLayout, context: PreflightContext): Promise<void> {
  const { templateFile, packer } = layout;
  await checkTemplateDir(context.root, layout.templateDir);
  const traits = templateTraits(await readFile(resolve(context.root, templateFile), 'utf8'));
  const version = await installedPackerVersion(packer, context.signal);
  if (!version) {
    throw new Failure(
      'setup',
      `packer not found (${packer}): install packer >= 1.7 from HashiCorp's apt repository (https://developer.hashicorp.com/packer/install)`,
    );
  }
  if (traits.requiresPlugins && !supportsPlugins(version)) {
    throw new Failure(
      'setup',
      `packer ${version.text} cannot build ${templateFile} (required_plugins needs packer >= 1.7; Debian ships 1.6.6): install packer from HashiCorp's apt repository (https://apt.releases.hashicorp.com); the build then runs packer init for the qemu plugin`,
    );
  }
  await checkQemuImg(layout.compression, 'compress built images', context.signal);
  if (traits.usesQemu && layout.accelerator === 'kvm') await checkKvm(layout.options.kvmDevice ?? (process.env.PIPELINE_KVM_DEVICE || '/dev/kvm'));
  if (traits.usesQemu && traits.buildsCd && !(await anyOnPath(ISO_TOOLS))) {
    throw new Failure('setup', `packer needs xorriso (or mkisofs/genisoimage) to write the cloud-init seed CD for ${templateFile}: apt-get install xorriso`);
  }
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
