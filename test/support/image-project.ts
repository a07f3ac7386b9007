// A throwaway image repository for CLI tests: the demo templates (packer `null` source,
// real packer and qemu-img), a copy of shared/, and a stand-in upstream of small qcow2
// "cloud images" with a SHA512SUMS, reached through file: URLs.
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cp, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { makeProject, PACKAGE_ENTRY, REPO, type Project } from './engine-project.ts';

export const IMAGES = ['debian-12', 'debian-13', 'pve-9'] as const;
export const BASE_OF = { 'debian-12': 'bookworm', 'debian-13': 'trixie', 'pve-9': 'trixie' } as const;
export const UPSTREAM_FILE = { bookworm: 'debian-12-generic-amd64.qcow2', trixie: 'debian-13-generic-amd64.qcow2' } as const;

export interface ImageProject extends Project {
  /** Replaces an upstream image with different content and updates SHA512SUMS. */
  changeUpstream(base: keyof typeof UPSTREAM_FILE): Promise<void>;
  readonly publishDir: string;
}

export interface ImageProjectOptions {
  /**
   * `demo` (default): packer's null source, built for real with packer 1.6.6 in seconds.
   * `production`: the repository's templates/, which need packer >= 1.7 and KVM.
   */
  readonly templates?: 'demo' | 'production';
}

export async function makeImageProject(t: ExecutionContext, extraConfig = '', options: ImageProjectOptions = {}): Promise<ImageProject> {
  const project = await makeProject(t, { config: '// replaced below\nexport default {};\n' });
  const templates = options.templates === 'production' ? join(REPO, 'templates') : join(REPO, 'demo', 'templates');
  await cp(templates, project.path('templates'), { recursive: true });
  await cp(join(REPO, 'shared'), project.path('shared'), { recursive: true });
  for (const file of Object.values(UPSTREAM_FILE)) makeQcow2(project.path(`upstream/${file}`), '64M');
  writeSums(project);
  const upstream = (file: string) => ({
    url: pathToFileURL(project.path(`upstream/${file}`)).href,
    checksumsUrl: pathToFileURL(project.path('upstream/SHA512SUMS')).href,
  });
  const publishDir = project.path('publish');
  await writeFile(
    project.path('pipeline.config.ts'),
    `import { defineConfig } from ${JSON.stringify(PACKAGE_ENTRY)};
export default defineConfig({
  bases: {
    bookworm: ${JSON.stringify(upstream(UPSTREAM_FILE.bookworm))},
    trixie: ${JSON.stringify(upstream(UPSTREAM_FILE.trixie))},
  },
  images: {
    'debian-12': { base: 'bookworm' },
    'debian-13': { base: 'trixie' },
    'pve-9': { base: 'trixie' },
  },
  publishDir: ${JSON.stringify(publishDir)},
  ${extraConfig}
});
`,
  );
  await cp(join(REPO, 'demo', 'publish', '.gitkeep'), join(publishDir, '.gitkeep'));
  return {
    ...project,
    publishDir,
    async changeUpstream(base) {
      const path = project.path(`upstream/${UPSTREAM_FILE[base]}`);
      execFileSync('qemu-io', ['-c', `write -P 0x${Math.floor(Math.random() * 200 + 16).toString(16)} 0 64k`, path]);
      writeSums(project);
    },
  };
}

export function makeQcow2(path: string, size: string): void {
  execFileSync('mkdir', ['-p', join(path, '..')]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, size]);
}

/**
 * A qcow2 image holding `dataBytes` of random data (incompressible, so its file is about that
 * size): bytes a download must carry whole, in a file the self-contained check accepts.
 */
export function randomQcow2(path: string, dataBytes: number): Buffer {
  execFileSync('mkdir', ['-p', join(path, '..')]);
  const raw = `${path}.raw`;
  writeFileSync(raw, randomBytes(dataBytes));
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, path]);
  rmSync(raw);
  return readFileSync(path);
}

function writeSums(project: Project): void {
  const sums = execFileSync('sha512sum', Object.values(UPSTREAM_FILE), { cwd: project.path('upstream'), encoding: 'utf8' });
  execFileSync('sh', ['-c', 'cat > SHA512SUMS'], { cwd: project.path('upstream'), input: sums });
}

/** `echo "$src:$tpl" | sha256sum` as the shell build script computed it. */
export function shellCacheKey(project: Pick<Project, 'root'>, image: string, baseFile: string): string {
  const script = [
    'set -eu',
    'base=$1 image=$2',
    `src=$(sha256sum "$base" | cut -d' ' -f1)`,
    `tpl=$(cat "templates/$image/template.pkr.hcl" "templates/$image/cleanup.sh" shared/scripts/cleanup-common.sh shared/scripts/detect-versions.sh shared/cloud-init/user-data.pkrtpl shared/cloud-init/meta-data | sha256sum | cut -d' ' -f1)`,
    'echo "$src:$tpl" | sha256sum | cut -d" " -f1',
  ].join('\n');
  return execFileSync('bash', ['-c', script, 'bash', baseFile, image], { cwd: project.root, encoding: 'utf8' }).trim();
}

/**
 * The tree the shell build script leaves: the bases in cache/ as downloaded, and per
 * image its qcow2, image-version.txt, `{name}.qcow2.sha256` and `.cache-key` composed by
 * the script's recipe; no .pipeline/. Made without packer, so it works with any templates.
 */
export async function makeShellBuiltTree(project: ImageProject): Promise<void> {
  for (const file of Object.values(UPSTREAM_FILE)) await cp(project.path(`upstream/${file}`), project.path(`cache/${file}`));
  for (const [index, image] of IMAGES.entries()) {
    const dir = project.path(`images/${image}`);
    makeQcow2(join(dir, `${image}.qcow2`), '32M');
    execFileSync('qemu-io', ['-c', `write -P 0x${(0x41 + index).toString(16)} 0 192k`, join(dir, `${image}.qcow2`)], { stdio: 'ignore' });
    const debian = image === 'debian-12' ? '12.13' : '13.3';
    await writeFile(join(dir, 'image-version.txt'), `DEBIAN_VERSION=${debian}\nPVE_VERSION=${image.startsWith('pve-') ? '9.1' : ''}\n`);
    execFileSync('sh', ['-c', `sha256sum ${image}.qcow2 > ${image}.qcow2.sha256`], { cwd: dir });
    await writeFile(join(dir, '.cache-key'), `${shellCacheKey(project, image, `cache/${UPSTREAM_FILE[BASE_OF[image]]}`)}\n`);
  }
}

/** Flips every bit of one byte of a file, in place (same size, new mtime). */
export async function flipByte(path: string, offset: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, offset);
    byte[0] = byte[0]! ^ 0xff;
    await handle.write(byte, 0, 1, offset);
  } finally {
    await handle.close();
  }
}
