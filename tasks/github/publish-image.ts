// Installs a downloaded image into the publish directory as `{name}.img`: compressed by
// qemu-img into a temp name in the same directory, then renamed, so PVE never sees half a file.
import { execFile } from 'node:child_process';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { GitHubFailure } from './client.ts';

export function resolvePublishDir(configured: string, env: NodeJS.ProcessEnv = process.env): string {
  return env.PIPELINE_PUBLISH_DIR?.trim() || configured;
}

export async function publishImage(source: string, publishDir: string, name: string, signal: AbortSignal): Promise<string> {
  await mkdir(publishDir, { recursive: true });
  const finalPath = join(publishDir, `${name}.img`);
  const tempPath = join(publishDir, `.${name}.img.${process.pid}.tmp`);
  try {
    await new Promise<void>((resolve, reject) => {
      execFile('qemu-img', ['convert', '-c', '-O', 'qcow2', source, tempPath], { signal, maxBuffer: 16 * 1024 * 1024 }, (error, _stdout, stderr) => {
        if (!error) return resolve();
        const code = (error as NodeJS.ErrnoException).code;
        reject(
          new GitHubFailure(
            code === 'ENOENT'
              ? 'qemu-img not found: install qemu-utils to publish images'
              : `qemu-img convert failed for ${name}: ${String(stderr).trim().split('\n').pop() || error.message}`,
          ),
        );
      });
    });
    await rename(tempPath, finalPath);
    return finalPath;
  } catch (error) {
    await rm(tempPath, { force: true });
    throw error;
  }
}
