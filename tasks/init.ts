// `pipeline init [images…]`: lays out a new image repository in the working directory from
// the package's own working examples. pipeline.config.ts is written for the images asked
// for; templates/{name}/ and shared/ are copied from the package as it is installed (so
// they are the templates this repository builds its images with; a template shared by
// several images is linked as in this repository, since npm packs no links); a tsconfig.json,
// .gitignore entries and `"type": "module"` make `tsc` and git see the repository as the
// config expects. It never overwrites a file: one already there is named and kept.
import { constants, existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_CONFIG_FILES, Failure, nearest, type StarterCommand, type StarterIO, writeFileAtomic } from '../src/index.ts';

/** The Debian generic cloud images the examples start from, by base name. */
const BASES = {
  bookworm: { suite: 'bookworm', file: 'debian-12-generic-amd64.qcow2' },
  trixie: { suite: 'trixie', file: 'debian-13-generic-amd64.qcow2' },
} as const;

interface Example {
  readonly base: keyof typeof BASES;
  readonly description: string;
  readonly caveat?: string;
  /**
   * The shared/ template its templates/{name}/template.pkr.hcl links to, as this
   * repository's does. npm leaves links out of a package, so init makes the link itself.
   */
  readonly sharedTemplate?: string;
}

/** The images the package's templates/ holds a working template for. */
export const EXAMPLES: Readonly<Record<string, Example>> = {
  'debian-12': { base: 'bookworm', description: 'Debian 12 (bookworm) cloud template', sharedTemplate: 'shared/templates/debian.pkr.hcl' },
  'debian-13': { base: 'trixie', description: 'Debian 13 (trixie) cloud template', sharedTemplate: 'shared/templates/debian.pkr.hcl' },
  'pve-9': {
    base: 'trixie',
    description: 'Proxmox VE 9 on Debian 13',
    caveat: 'the cache key cannot see the PVE repository state: use --force (or the scheduled all --force rebuild) to pick up PVE package updates',
  },
};

export const DEFAULT_IMAGES = ['debian-12', 'debian-13'];
/** What a build writes and no one commits. */
export const IGNORED = ['cache/', 'images/', '.pipeline/', 'logs/'];

export const initCommand: StarterCommand = {
  usage: 'init [images…]',
  description: [
    `Lays out a new image repository here: pipeline.config.ts for the images (default: ${DEFAULT_IMAGES.join(', ')};`,
    `examples: ${Object.keys(EXAMPLES).join(', ')}), their templates/{name}/, the shared/ scripts and cloud-init seed,`,
    'a tsconfig.json, .gitignore entries and "type": "module" in package.json. A file already there is kept.',
  ].join('\n'),
  run: async ({ positionals }, io) => init(positionals, io),
};

interface Package {
  readonly root: string;
  readonly name: string;
  /** Where the repository's documentation is read (absolute: the docs are not in the package). */
  readonly docs: string;
}

/** Lays out the repository in `io.cwd`; exit 0, or a usage Failure for an image with no example. */
export async function init(requested: readonly string[], io: StarterIO): Promise<number> {
  const pkg = await ownPackage();
  const names = [...new Set(requested.length > 0 ? requested : DEFAULT_IMAGES)];
  const available = (await readdir(join(pkg.root, 'templates'))).filter((name) => name in EXAMPLES).sort();
  for (const name of names) {
    if (available.includes(name)) continue;
    const guess = nearest(name, available);
    throw new Failure(
      'usage',
      `init: no example template named "${name}"${guess ? ` (did you mean ${guess}?)` : ''}; the examples are ${available.join(', ')}. ` +
        'For an image of your own, copy templates/debian-13 to templates/NAME and declare it under images in pipeline.config.ts',
    );
  }
  const report = new Report(io);
  const manifest = await packageJson(io.cwd, report);
  // A package that says it is CommonJS keeps saying so; the config is then an .mts, which
  // tsc checks as an ES module either way.
  const configName = manifest.type === 'commonjs' ? 'pipeline.config.mts' : 'pipeline.config.ts';
  const existingConfig = DEFAULT_CONFIG_FILES.find((name) => existsSync(join(io.cwd, name)));
  if (existingConfig) report.kept(existingConfig);
  else await report.create(configName, configText(names, pkg));

  for (const name of names) {
    await copyTree(join(pkg.root, 'templates', name), join('templates', name), report);
    const shared = EXAMPLES[name]!.sharedTemplate;
    if (shared !== undefined) await report.link(join('..', '..', shared), join('templates', name, 'template.pkr.hcl'));
  }
  await copyTree(join(pkg.root, 'shared'), 'shared', report);
  await report.create('tsconfig.json', tsconfigText(existingConfig ?? configName));
  await gitignore(io.cwd, report);

  report.finish();
  if (existingConfig && report.createdAny(names.map((name) => `templates/${name}/`))) {
    io.out(`note: ${existingConfig} was kept as it was: declare ${names.join(', ')} under its images if it does not yet`);
  }
  const next: Array<[string, string]> = [];
  if (!manifest.depends(pkg.name)) next.push([`npm install -D ${pkg.name}`, 'the config imports it']);
  next.push(['npx pipeline --dry-run', 'what would run, and why']);
  next.push([`${manifest.depends('typescript') ? '' : 'npm install -D typescript && '}npx tsc`, `type-checks ${existingConfig ?? configName}`]);
  next.push([`npx pipeline ${names[0]}:publish`, 'builds it (packer >= 1.7, qemu-img, xorriso, /dev/kvm) and installs it into publishDir']);
  const width = Math.max(...next.map(([command]) => command.length));
  io.out('next:');
  for (const [command, what] of next) io.out(`  ${command.padEnd(width)}   ${what}`);
  return 0;
}

/** What init did, file by file, printed as it goes. */
class Report {
  private readonly created: string[] = [];
  private keptCount = 0;

  constructor(private readonly io: StarterIO) {}

  /** Writes `path` (relative to the working directory) unless something is there already. */
  async create(path: string, text: string): Promise<void> {
    await this.write(path, () => writeFile(join(this.io.cwd, path), text, { flag: 'wx' }));
  }

  /** Copies `from` to `path`, with its mode (scripts stay executable), unless something is there already. */
  async copy(from: string, path: string): Promise<void> {
    await this.write(path, () => copyFile(from, join(this.io.cwd, path), constants.COPYFILE_EXCL));
  }

  /** Makes `path` a symbolic link to `target` (relative to the link's directory) unless something is there already. */
  async link(target: string, path: string): Promise<void> {
    await this.write(path, () => symlink(target, join(this.io.cwd, path)));
  }

  kept(path: string, why = 'already there'): void {
    this.keptCount++;
    this.io.out(`kept ${path} (${why})`);
  }

  changed(path: string, what: string): void {
    this.io.out(`${what} to ${path}`);
  }

  createdAny(prefixes: readonly string[]): boolean {
    return this.created.some((path) => prefixes.some((prefix) => path.startsWith(prefix)));
  }

  finish(): void {
    if (this.created.length === 0 && this.keptCount > 0) this.io.out('nothing to do: every file was already there');
  }

  private async write(path: string, write: () => Promise<void>): Promise<void> {
    try {
      await mkdir(dirname(join(this.io.cwd, path)), { recursive: true });
      await write();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return this.kept(path);
      throw cannotWrite(path, error);
    }
    this.created.push(path);
    this.io.out(`created ${path}`);
  }
}

function cannotWrite(path: string, error: unknown): Failure {
  return new Failure('setup', `init: cannot write ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
}

/** Every file under `from` (the package's), copied to the same place under `to`. */
async function copyTree(from: string, to: string, report: Report): Promise<void> {
  const entries = await readdir(from, { recursive: true, withFileTypes: true });
  // Regular files only: a link (which the packed package would not hold anyway) is made by link().
  const files = entries.filter((entry) => entry.isFile()).map((entry) => relative(from, join(entry.parentPath, entry.name)));
  for (const file of files.sort()) await report.copy(join(from, file), join(to, file));
}

interface Manifest {
  readonly type: unknown;
  depends(name: string): boolean;
}

/** package.json with `"type": "module"` (made when missing; a "type" already set is kept). */
async function packageJson(cwd: string, report: Report): Promise<Manifest> {
  const path = join(cwd, 'package.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw cannotWrite('package.json', error);
    const name =
      basename(cwd)
        .toLowerCase()
        .replace(/[^a-z0-9._-]+/g, '-')
        .replace(/^[._-]+/, '') || 'images';
    await report.create('package.json', `${JSON.stringify({ name, private: true, type: 'module' }, null, 2)}\n`);
    return { type: 'module', depends: () => false };
  }
  let manifest: Record<string, unknown>;
  try {
    manifest = JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new Failure('setup', `init: package.json is not JSON (${(error as Error).message}); fix it, then run pipeline init again`);
  }
  const depends = (name: string): boolean =>
    ['dependencies', 'devDependencies', 'optionalDependencies'].some((field) => Object.hasOwn((manifest[field] as object | undefined) ?? {}, name));
  if (manifest.type !== undefined) {
    if (manifest.type !== 'module') report.kept(`package.json's "type": ${JSON.stringify(manifest.type)}`, 'the config is written as an .mts');
    return { type: manifest.type, depends };
  }
  // "type" after the fields that name the package, as npm writes it; the rest in its order.
  const entries = Object.entries(manifest);
  const at = Math.max(0, ...['name', 'version', 'description'].map((key) => entries.findIndex(([field]) => field === key) + 1));
  entries.splice(at, 0, ['type', 'module']);
  const indent = /\n([ \t]+)"/.exec(text)?.[1] ?? '  ';
  try {
    await writeFileAtomic(path, `${JSON.stringify(Object.fromEntries(entries), null, indent)}\n`);
  } catch (error) {
    throw cannotWrite('package.json', error);
  }
  report.changed('package.json', 'added "type": "module"');
  return { type: 'module', depends };
}

/** .gitignore with the build's outputs (made when missing; entries already there are kept). */
async function gitignore(cwd: string, report: Report): Promise<void> {
  const path = join(cwd, '.gitignore');
  const text = await readFile(path, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw cannotWrite('.gitignore', error);
  });
  if (text === undefined) return report.create('.gitignore', `${IGNORED.join('\n')}\n`);
  // `cache/`, `/cache/`, `cache` and `/cache` all keep cache/ out of git.
  const present = new Set(text.split('\n').map((line) => line.trim().replace(/^\//, '').replace(/\/$/, '')));
  const missing = IGNORED.filter((entry) => !present.has(entry.replace(/\/$/, '')));
  if (missing.length === 0) return;
  try {
    await writeFileAtomic(path, `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}${missing.join('\n')}\n`);
  } catch (error) {
    throw cannotWrite('.gitignore', error);
  }
  report.changed('.gitignore', `added ${missing.join(', ')}`);
}

function configText(names: readonly string[], pkg: Package): string {
  const bases = [...new Set(names.map((name) => EXAMPLES[name]!.base))].sort();
  const image = (name: string): string[] => {
    const { base, description, caveat } = EXAMPLES[name]!;
    if (!caveat) return [`    '${name}': { base: '${base}', description: '${description}' },`];
    return [`    '${name}': {`, `      base: '${base}',`, `      description: '${description}',`, `      caveat: '${caveat}',`, '    },'];
  };
  return [
    '// The images of this repository. `npx pipeline --help` lists the targets it declares,',
    '// `npx pipeline --dry-run` says what would run and why. Every key:',
    `// ${pkg.docs}/configuration.md`,
    `import { defineConfig } from '${pkg.name}';`,
    '',
    '// A Debian generic cloud image and the SHA512SUMS that lists it.',
    'const debianCloud = (suite: string, file: string) => ({',
    '  url: `https://cloud.debian.org/images/cloud/${suite}/latest/${file}`,',
    '  checksumsUrl: `https://cloud.debian.org/images/cloud/${suite}/latest/SHA512SUMS`,',
    '});',
    '',
    'export default defineConfig({',
    '  bases: {',
    ...bases.map((base) => `    ${base}: debianCloud('${BASES[base].suite}', '${BASES[base].file}'),`),
    '  },',
    '  // Each image builds templates/{name}/template.pkr.hcl with its cleanup.sh and the shared/',
    `  // files. What a template is given: ${pkg.docs}/template-variables.md`,
    '  images: {',
    ...names.flatMap(image),
    '  },',
    "  // Where `pipeline {image}:publish` installs {image}.img (Proxmox VE's ISO storage).",
    "  publishDir: '/var/lib/vz/template/iso',",
    '  // To keep the images on a GitHub release (`pipeline upload:latest`), fetch them on other',
    '  // hosts (`pipeline images download`) and reuse them instead of building: see',
    `  // ${pkg.docs}/stores.md`,
    "  // release: { repo: 'your-org/images', tag: 'latest' },",
    '});',
    '',
  ].join('\n');
}

/** The settings the package's types are checked with; `tsc` then checks the config alone. */
function tsconfigText(configName: string): string {
  const compilerOptions = {
    target: 'ES2022',
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    exactOptionalPropertyTypes: true,
    skipLibCheck: false,
    noEmit: true,
  };
  return `${JSON.stringify({ compilerOptions, include: [configName] }, null, 2)}\n`;
}

/** This package: its root (the directory above dist/ or tasks/ with the package.json), name and docs. */
async function ownPackage(): Promise<Package> {
  let root = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(root, 'package.json'))) {
    const parent = dirname(root);
    if (parent === root) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    root = parent;
  }
  const manifest = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { name: string; repository: { url: string } };
  const repository = manifest.repository.url.replace(/^git\+/, '').replace(/\.git$/, '');
  return { root, name: manifest.name, docs: `${repository}/blob/main/docs` };
}
