// What a release on the loopback GitHub must look like once every writer is done: one
// release for the tag, no leftovers of uploads, and for each image a record, a `.sha256`
// and bytes that agree with each other and with one of the versions that was uploaded,
// and an images.json whose entries are exactly those records.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { GitHubServer } from './github-server.ts';

export interface ImageVersion {
  readonly name: string;
  readonly bytes: Buffer;
  readonly sha256: string;
}

export async function imageVersion(name: string, path: string): Promise<ImageVersion> {
  const bytes = await readFile(path);
  return { name, bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

export interface ProblemScope {
  /**
   * `versions` names only some of the release's images: the others' assets (what an
   * interrupted upload of theirs left) and the list of images in images.json are not
   * checked.
   */
  readonly subset?: boolean;
}

/** Problems with the release, in words (empty: consistent). `versions`: for each image, the versions any writer uploaded. */
export async function releaseProblems(
  server: GitHubServer,
  tag: string,
  versions: ReadonlyMap<string, readonly ImageVersion[]>,
  scope: ProblemScope = {},
): Promise<string[]> {
  const problems: string[] = [];
  const count = server.releaseCount(tag);
  if (count !== 1) problems.push(`${count} releases are tagged ${tag}`);
  if (count === 0) return problems;
  const assets = server.assets(tag);
  const images = [...versions.keys()];
  const checked = (asset: { name: string }): boolean => !scope.subset || images.some((image) => asset.name.startsWith(`${image}.`));
  for (const asset of assets.filter(checked)) {
    if (asset.state !== 'uploaded') problems.push(`${asset.name} is half-made (${asset.state})`);
    if (asset.name.includes('.uploading-')) problems.push(`${asset.name} was left behind`);
  }
  const byName = new Map(assets.map((asset) => [asset.name, asset]));
  const bytesOf = async (name: string) => server.assetBytes(tag, name);
  let index: { images?: Record<string, unknown> } | undefined;
  try {
    index = JSON.parse((await bytesOf('images.json')).toString());
  } catch (error) {
    problems.push(`images.json: ${error instanceof Error ? error.message : error}`);
  }
  if (index && !scope.subset) {
    const listed = Object.keys(index.images ?? {}).sort();
    const wanted = [...versions.keys()].sort();
    if (JSON.stringify(listed) !== JSON.stringify(wanted)) problems.push(`images.json lists ${listed.join(', ') || 'nothing'}, not ${wanted.join(', ')}`);
  }
  for (const [name, candidates] of versions) {
    const recordAsset = byName.get(`${name}.qcow2.json`);
    if (!recordAsset) {
      problems.push(`${name}: no record`);
      continue;
    }
    const record = JSON.parse((await bytesOf(recordAsset.name)).toString()) as {
      image: {
        sha256: string;
        size: number;
        parts: Array<{ name: string; size: number }>;
        attachments?: Record<string, { name: string; size: number; sha256: string }>;
      };
      assets: Array<{ name: string; id: number }>;
    };
    const version = candidates.find((candidate) => candidate.sha256 === record.image.sha256);
    if (!version) {
      problems.push(`${name}: the record's sha256 ${record.image.sha256} is none of the uploaded versions`);
      continue;
    }
    for (const entry of record.assets) {
      if (byName.get(entry.name)?.id !== entry.id) problems.push(`${name}: ${entry.name} is not the asset its record names (id ${entry.id})`);
    }
    const checksum = byName.get(`${name}.qcow2.sha256`) ? (await bytesOf(`${name}.qcow2.sha256`)).toString() : '';
    if (checksum !== `${version.sha256}  ${name}.qcow2\n`) problems.push(`${name}: .sha256 says ${JSON.stringify(checksum)}`);
    const pieces = await Promise.all(record.image.parts.map((part) => (byName.has(part.name) ? bytesOf(part.name) : Promise.resolve(Buffer.alloc(0)))));
    if (!Buffer.concat(pieces).equals(version.bytes)) problems.push(`${name}: the bytes on the release are not the image its record describes`);
    // Attachments (the chunk index, …) are the record's too: there, with the bytes it names.
    const attachments = Object.values(record.image.attachments ?? {});
    for (const attachment of attachments) {
      const bytes = byName.has(attachment.name) ? await bytesOf(attachment.name) : undefined;
      if (!bytes || bytes.length !== attachment.size || createHash('sha256').update(bytes).digest('hex') !== attachment.sha256)
        problems.push(`${name}: ${attachment.name} is not the attachment its record names`);
    }
    const data = assets
      .filter((asset) => asset.name.startsWith(`${name}.qcow2`) && !/\.(json|sha256)$/.test(asset.name))
      .filter((asset) => !attachments.some((attachment) => attachment.name === asset.name))
      .map((asset) => asset.name);
    const expectedData = record.image.parts.map((part) => part.name);
    if (JSON.stringify(data.sort()) !== JSON.stringify([...expectedData].sort()))
      problems.push(`${name}: data assets ${data.join(', ')}, the record names ${expectedData.join(', ')}`);
    if (index && JSON.stringify(index.images?.[name]) !== JSON.stringify(record.image)) problems.push(`${name}: images.json's entry differs from the record`);
  }
  return problems;
}
