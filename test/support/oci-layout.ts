// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`) holding one
// file as a one-layer artifact, for `skopeo copy oci:DIR:TAG docker://…`: how a user of
// the container tools would push the same image without this tool. The file goes in by a
// hard link when it can (no second copy of a large image).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, link, mkdir, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

export interface LayoutArtifact {
  readonly dir: string;
  readonly tag: string;
  readonly manifestDigest: string;
  readonly layerDigest: string;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function writeOciLayout(
  dir: string,
  file: string,
  options: { tag?: string; artifactType?: string; layerMediaType?: string; layerDigest?: string } = {},
): Promise<LayoutArtifact> {
  const tag = options.tag ?? 'latest';
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layerHex = options.layerDigest ?? (await sha256File(file));
  const size = (await stat(file)).size;
  await link(file, join(blobs, layerHex)).catch(async (error: NodeJS.ErrnoException) => {
    if (error.code === 'EEXIST') return;
    await copyFile(file, join(blobs, layerHex));
  });
  const put = async (bytes: Buffer) => {
    const hex = createHash('sha256').update(bytes).digest('hex');
    await writeFile(join(blobs, hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  const config = await put(Buffer.from('{}'));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: options.artifactType ?? 'application/vnd.example.file',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', ...config },
      layers: [
        {
          mediaType: options.layerMediaType ?? 'application/octet-stream',
          digest: `sha256:${layerHex}`,
          size,
          annotations: { 'org.opencontainers.image.title': basename(file) },
        },
      ],
    }),
  );
  const stored = await put(manifest);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...stored, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return { dir, tag, manifestDigest: stored.digest, layerDigest: `sha256:${layerHex}` };
}
