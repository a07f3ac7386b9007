// Points an image project's bases at a loopback mirror instead of file: URLs, so that the
// mirror's counters see every byte of base image a run fetches.
import { readFile, writeFile } from 'node:fs/promises';
import type { ImageProject } from './image-project.ts';
import { UPSTREAM_FILE } from './image-project.ts';
import { MirrorServer } from './mirror-server.ts';

/** Starts a mirror serving the project's upstream images and rewrites its config to use it. */
export async function serveUpstream(project: Pick<ImageProject, 'path'>): Promise<MirrorServer> {
  const files = await Promise.all(Object.values(UPSTREAM_FILE).map(async (file) => [file, await readFile(project.path(`upstream/${file}`))] as const));
  const mirror = await MirrorServer.start(Object.fromEntries(files));
  let config = await readFile(project.path('pipeline.config.ts'), 'utf8');
  for (const file of Object.values(UPSTREAM_FILE)) {
    config = config.replaceAll(JSON.stringify(`file://${project.path(`upstream/${file}`)}`), JSON.stringify(mirror.urlOf(file)));
  }
  config = config.replaceAll(JSON.stringify(`file://${project.path('upstream/SHA512SUMS')}`), JSON.stringify(mirror.checksumsUrl));
  if (config.includes('file://')) {
    await mirror.close();
    throw new Error(`the config still names file: URLs:\n${config}`);
  }
  await writeFile(project.path('pipeline.config.ts'), config);
  return mirror;
}

/** Bytes of base images the mirror has served (its SHA512SUMS answers do not count). */
export function baseBytesServed(mirror: MirrorServer): number {
  const sums = mirror.requests.filter((request) => request.path === '/SHA512SUMS' && request.method === 'GET').length;
  return mirror.bytesServed - sums * Buffer.byteLength(mirror.checksumList());
}
