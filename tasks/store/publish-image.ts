// Installs a downloaded image into the publish directory as `{name}.img` through the
// publish task's own routine (qemu-img convert -c to a temp name, then rename; skipped
// when that exact image is already published), so a fresh host and a build host
// publish the same way.
import { join } from 'node:path';
import { createTaskContext, StatCache } from '../../src/index.ts';
import { publishedPath, publishImage as publishWithContext } from '../publish.ts';

export interface PublishDownloadedOptions {
  readonly source: string;
  readonly sourceSha256: string;
  readonly publishDir: string;
  readonly name: string;
  readonly root: string;
  readonly signal: AbortSignal;
  readonly onProgress?: (done: number, total: number | undefined) => void;
}

/** Returns the published path. The caller has checked the directory (checkPublishDir). */
export async function publishDownloaded(options: PublishDownloadedOptions): Promise<string> {
  const context = createTaskContext({
    id: `${options.name}:publish`,
    root: options.root,
    logFile: join(options.root, 'logs', `${options.name}.publish.log`),
    signal: options.signal,
    hasher: await StatCache.open(),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  try {
    await publishWithContext(context, { source: options.source, sourceSha256: options.sourceSha256, publishDir: options.publishDir, name: options.name });
  } catch (error) {
    await context.removeTemps();
    throw error;
  } finally {
    await context.close();
  }
  return publishedPath(options.publishDir, options.name);
}
