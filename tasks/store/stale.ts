// Why an image in the store no longer matches what it would be built from now, in words a
// release manager acts on. Pure: the recorded inputs against the current ones.
import type { CurrentImageKey, ImageSources } from './catalog.ts';
import type { ImageRecord } from './record.ts';

export function staleReasons(recorded: ImageRecord, current: CurrentImageKey): string[] {
  if (current.cacheKey !== undefined && recorded.cacheKey === current.cacheKey) return [];
  const reasons: string[] = [];
  const before = recorded.sources;
  if (!before) return ['cache key changed (the store records no inputs to compare)'];
  const base = compareBase(before.base, current.sources.base);
  if (base) reasons.push(base);
  const files = [...new Set([...Object.keys(before.files), ...Object.keys(current.sources.files)])].sort();
  for (const file of files) {
    const was = before.files[file];
    const now = current.sources.files[file];
    if (was === now) continue;
    reasons.push(was === undefined ? `template file ${file} added` : now === undefined ? `template file ${file} removed` : `template file ${file} changed`);
  }
  if (reasons.length) return reasons;
  // Without the base here there is no key to compare; equal inputs are the same image.
  return current.cacheKey === undefined ? [] : ['cache key changed'];
}

/**
 * The base by upstream SHA-512 when both sides know it (a machine without the base still
 * does, from SHA512SUMS), else by SHA-256 of the cached file.
 */
function compareBase(before: ImageSources['base'], now: ImageSources['base']): string | undefined {
  const changed = `upstream base image changed (${now.path})`;
  if (before.sha512 && now.sha512) return before.sha512 === now.sha512 ? undefined : changed;
  if (before.sha256 && now.sha256) return before.sha256 === now.sha256 ? undefined : changed;
  return `base image ${now.path} cannot be compared: the store and this machine share no checksum of it (download it here to compare by SHA-256)`;
}
