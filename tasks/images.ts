// `pipeline images list | download`: the consumer side of the image store.
import { mkdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { type Command, type CommandIO, Failure, formatBytes, formatOutput, isCancellation, toFailure } from '../src/index.ts';
import { assertSelfContainedImage, prepareSelfContainedCheck } from './image-check.ts';
import { type DownloadedImageJson, type ImagesElsewhere, imagesDownloadOutput, imagesListOutput } from './images-output.ts';
import { type ProvenanceGate, provenanceGate } from './provenance/gate.ts';
import { checkPublishDir, resolvePublishDir } from './publish.ts';
import type { ImageCatalog } from './store/catalog.ts';
import { expandHome, flag, openStore, stringValue, tagOf, type CommandArgs, type CommandDeps } from './store/command-support.ts';
import { seedCandidates } from './store/delta/local-seeds.ts';
import { describeTransfer } from './store/delta/describe.ts';
import { getImage } from './store/get-image.ts';
import { imageFileName, isValidImageName } from './store/names.ts';
import { publishDownloaded } from './store/publish-image.ts';
import type { StoredImage } from './store/store.ts';
import type { ImageStore } from './store/store.ts';
import { notedTag } from './release-note.ts';

async function list(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = tagOf(catalog, args, 'version');
  const store = await openStore(catalog, tag, deps, io);
  const listing = await store.list(io.signal);
  if (!listing.exists) throw new Failure('not-found', `${store.location} does not exist`);
  for (const note of listing.notes) io.err(`pipeline: ${note}`);
  const elsewhere = listing.images.length ? undefined : await whereImagesAre(catalog, store, tag, io.signal);
  if (io.json) {
    io.out(formatOutput(imagesListOutput(tag, listing.images, elsewhere)));
    return 0;
  }
  if (!listing.images.length) io.out(holdsNoImages(store.location, elsewhere, 'list'));
  const width = Math.max(0, ...listing.images.map((image) => image.name.length));
  for (const image of listing.images) {
    const notes = [
      image.pieces > 1 ? `(multipart: ${image.pieces} parts)` : '',
      image.state === 'replacing' ? '[being replaced]' : image.state === 'complete' ? '' : `[${image.state}: ${image.detail ?? '?'}]`,
    ].filter(Boolean);
    io.out(`${image.name.padEnd(width)}  ${formatBytes(image.size).padStart(10)}${notes.length ? `  ${notes.join(' ')}` : ''}`);
  }
  return 0;
}

/** The publish directory, created when its parent exists (a fresh host's `--publish` into a new folder). */
async function preparePublishDir(dir: string): Promise<void> {
  if (!(await stat(dir).catch(() => undefined)) && (await stat(dirname(dir)).catch(() => undefined))?.isDirectory()) {
    await mkdir(dir).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST')
        throw new Failure('setup', `cannot create publish directory ${dir} (${error.code ?? error.message}): create it, or set PIPELINE_PUBLISH_DIR`);
    });
  }
  await checkPublishDir(dir);
}

async function download(catalog: ImageCatalog, deps: CommandDeps, args: CommandArgs, io: CommandIO): Promise<number> {
  const tag = tagOf(catalog, args, 'version');
  const requested = args.positionals.slice(1);
  if (!requested.length) throw new Failure('usage', 'usage: images download <names…|all> [--version TAG] [--dir DIR] [--publish] [--overwrite]');
  for (const name of requested) if (name !== 'all' && !isValidImageName(name)) throw new Failure('usage', `images download: "${name}" is not an image name`);
  const dir = expandHome(stringValue(args, 'dir') ?? '~/.cache/images');
  const publish = flag(args, 'publish');
  const publishDir = resolvePublishDir(catalog.publishDir, deps.store?.env ?? process.env);
  // A publish directory that cannot take the images is found before gigabytes move.
  if (publish) await preparePublishDir(publishDir);

  const store = await openStore(catalog, tag, deps, io);
  // With release.trust, an image whose provenance does not hold is refused before its bytes move.
  const gate = await provenanceGate({ trust: catalog.release.trust, root: catalog.root, env: deps.store?.env ?? process.env });
  const names = await namesToDownload(catalog, store, tag, requested, stringValue(args, 'version') !== undefined, io);
  // Other images may share chunks with each one (a common base): those being fetched and those this project builds.
  const others = [...new Set([...names, ...catalog.names])];
  const target: DownloadTarget = { catalog, store, gate, dir, publishDir, publish, overwrite: flag(args, 'overwrite'), others };
  const results: DownloadedImageJson[] = [];
  const notStarted: string[] = [];
  for (const name of names) {
    const stopped = io.signal.aborted || results.some((result) => result.status === 'cancelled');
    if (stopped) notStarted.push(name);
    results.push(stopped ? { name, status: 'cancelled' } : await downloadReported(target, name, io));
  }
  if (notStarted.length && !io.json) io.err(`cancelled: ${notStarted.join(', ')} not downloaded`);
  if (io.json) io.out(formatOutput(imagesDownloadOutput(tag, dir, results)));
  if (results.some((result) => result.status === 'cancelled')) throw new Failure('cancelled', 'images download cancelled');
  return results.some((result) => result.status === 'failed') ? 1 : 0;
}
/**
 * The names to download: those asked for, with `all` standing for the declared images the
 * store holds. A versioned release is usually tag-only: when asked for `all` or a version,
 * a store that holds no images says where they are rather than fail each name.
 */
async function namesToDownload(
  catalog: ImageCatalog,
  store: ImageStore,
  tag: string,
  requested: readonly string[],
  versioned: boolean,
  io: CommandIO,
): Promise<string[]> {
  let names = [...new Set(requested)];
  if (requested.includes('all') || versioned) {
    const listing = await store.list(io.signal);
    if (!listing.exists) throw new Failure('not-found', `${store.location} does not exist`);
    for (const note of listing.notes) io.err(`pipeline: ${note}`);
    if (!listing.images.length)
      throw new Failure('not-found', holdsNoImages(store.location, await whereImagesAre(catalog, store, tag, io.signal), 'download', requested));
    if (requested.includes('all')) {
      const meant = imagesMeantByAll(catalog, listing.images, store.location, (line) => io.err(`pipeline: ${line}`));
      names = [...new Set([...meant, ...requested.filter((name) => name !== 'all')])];
    }
  }
  if (!names.length) throw new Failure('not-found', `${store.location} holds no images the config declares`);
  return names;
}

/** Where and how the images of one `images download` go. */
interface DownloadTarget {
  readonly catalog: ImageCatalog;
  readonly store: ImageStore;
  readonly gate: ProvenanceGate;
  readonly dir: string;
  readonly publishDir: string;
  readonly publish: boolean;
  readonly overwrite: boolean;
  /** The images that may share chunks with the one being fetched. */
  readonly others: readonly string[];
}

/** Downloads (and publishes) one image, saying how it went; a failure or a cancellation is its result, not thrown. */
async function downloadReported(target: DownloadTarget, name: string, io: CommandIO): Promise<DownloadedImageJson> {
  try {
    return await downloadOne(target, name, io);
  } catch (error) {
    if (isCancellation(error, io.signal)) {
      if (!io.json) io.err(`${name}: cancelled (what arrived is kept; the next download resumes it)`);
      return { name, status: 'cancelled' };
    }
    const failure = toFailure(error, io.signal);
    if (!io.json) io.err(`${name}: ${failure.message}`);
    return { name, status: 'failed', kind: failure.kind, error: failure.message };
  }
}

async function downloadOne(target: DownloadTarget, name: string, io: CommandIO): Promise<DownloadedImageJson> {
  const { catalog, store, gate, dir, publishDir } = target;
  const path = join(dir, imageFileName(name));
  prepareSelfContainedCheck(io.signal);
  const result = await getImage(store, name, {
    path,
    seeds: seedCandidates({ name, replacing: path, publishDir, builtImage: (image) => catalog.imagePath(image), downloadDir: dir, others: target.others }),
    overwrite: target.overwrite,
    signal: io.signal,
    onProgress: (done, total) => io.progress(name, done, total),
    log: (line) => io.err(line),
    accept: (image, signal) => gate.accept(image, signal, (line) => io.err(line)),
    // Before the rename: an image that names another file is never put where a VM or a publish would read it.
    acceptBytes: (path, signal) => assertSelfContainedImage(path, signal, { label: `${name} on ${store.location}`, refused: 'nothing was downloaded' }),
  });
  await gate.keepBeside(name, result.path);
  if (!io.json) {
    io.out(`${name}: ${result.alreadyPresent ? 'already present, checksum verified' : 'downloaded, checksum verified'}: ${result.path}`);
    if (!result.alreadyPresent) io.out(describeTransfer(name, result.size, result.transfer));
  }
  let published: string | undefined;
  if (target.publish) {
    published = await publishDownloaded({
      source: result.path,
      sourceSha256: result.sha256,
      publishDir,
      name,
      root: io.root,
      signal: io.signal,
      onProgress: (done, total) => io.progress(`${name} publish`, done, total),
    });
    if (!io.json) io.out(`${name}: published ${join(publishDir, `${name}.img`)}`);
  }
  return {
    name,
    path: result.path,
    size: result.size,
    sha256: result.sha256,
    status: result.alreadyPresent ? 'present' : 'downloaded',
    fetched: result.transfer.fetched,
    reused: result.transfer.reused.map((seed) => ({ path: seed.path, bytes: seed.bytes })),
    ...(published !== undefined ? { published } : {}),
  };
}

/**
 * What `all` downloads: the images the config declares that the store holds. Others in
 * the store (anyone who can write it can add one) are named in a note and downloaded only
 * when asked for by name; declared ones it lacks are noted too.
 */
function imagesMeantByAll(catalog: ImageCatalog, stored: readonly StoredImage[], location: string, note: (line: string) => void): string[] {
  const held = new Set(stored.map((image) => image.name));
  const undeclared = stored.map((image) => image.name).filter((name) => !catalog.names.includes(name));
  if (undeclared.length) note(`${location} also holds ${undeclared.join(', ')}, which the config does not declare: not downloaded (name one to download it)`);
  const absent = catalog.names.filter((name) => !held.has(name));
  if (absent.length && absent.length < catalog.names.length) note(`${location} holds no ${absent.join(', ')}`);
  return catalog.names.filter((name) => held.has(name));
}

/** Where the images of a location that holds none are: what its description notes, else the config's own location. */
async function whereImagesAre(catalog: ImageCatalog, store: ImageStore, tag: string, signal: AbortSignal): Promise<ImagesElsewhere | undefined> {
  const noted = store.descriptions ? notedTag((await store.descriptions.read(tag, signal))?.text ?? '') : undefined;
  if (noted !== undefined && noted !== tag) return { tag: noted, from: 'description' };
  return catalog.release.tag !== tag ? { tag: catalog.release.tag, from: 'config' } : undefined;
}

/** One line: the location holds no images, where they are instead, and the command that gets them there (never run for the user). */
function holdsNoImages(location: string, elsewhere: ImagesElsewhere | undefined, sub: 'list' | 'download', names: readonly string[] = []): string {
  if (!elsewhere) return `${location} holds no images`;
  const command = `pipeline images ${sub}${names.length ? ` ${names.join(' ')}` : ''} --version ${elsewhere.tag}`;
  const where = elsewhere.from === 'description' ? `its description says they are on release ${elsewhere.tag}` : `this config keeps them on ${elsewhere.tag}`;
  return `${location} holds no images; ${where}: ${command}`;
}

export function imagesCommand(catalog: ImageCatalog, deps: CommandDeps = {}): Command {
  return {
    subcommands: ['list', 'download'],
    usage: 'images list [--version TAG] | images download <names…|all> [--version TAG] [--dir DIR] [--publish] [--overwrite]',
    description: 'list the images on a GitHub release, or download, verify and install them',
    options: {
      version: { type: 'string' },
      dir: { type: 'string' },
      publish: { type: 'boolean' },
      overwrite: { type: 'boolean' },
    },
    async run(args, io) {
      const sub = args.positionals[0];
      const body = sub === 'list' ? list : sub === 'download' ? download : undefined;
      if (!body) throw new Failure('usage', `images: unknown subcommand ${sub ? `"${sub}"` : '(none)'}; use list or download`);
      return body(catalog, deps, args, io);
    },
  };
}
