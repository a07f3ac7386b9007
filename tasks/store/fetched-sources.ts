// The inputs of an image fetched from the store, kept beside it. A host that fetched an
// image has no base image to hash, so the inputs it would compute now lack the base's
// SHA-256; uploading from it would then rewrite the image's record (and images.json) with
// less than the build host recorded. Keeping what the record said, for that cache key,
// lets such a host's upload find the record already right.
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import type { ImageSources } from './catalog.ts';
import { imageSourcesSchema } from './record.ts';

const fetchedSourcesSchema = z.object({ cacheKey: z.string(), sources: imageSourcesSchema });

export function fetchedSourcesText(cacheKey: string, sources: ImageSources): string {
  return `${JSON.stringify({ cacheKey, sources }, null, 2)}\n`;
}

/** The sources kept at `path` for an image whose key is `cacheKey`; undefined when none are, or they belong to another key. */
export async function readFetchedSources(path: string, cacheKey: string): Promise<ImageSources | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const parsed = fetchedSourcesSchema.safeParse(json);
  return parsed.success && parsed.data.cacheKey === cacheKey ? parsed.data.sources : undefined;
}
