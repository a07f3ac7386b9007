// Opening the store the config names, and what the rest of tasks/ asks of it before any
// request: its setup, its description, what an upload's fingerprint includes. Each goes
// to the settings' backend through the registry (backends.ts).
import type { StoreFingerprint, StoreOptions } from './backend.ts';
import { backendOf, type StoreSettings } from './backends.ts';
import { checkTag } from './names.ts';
import type { ImageStore } from './store.ts';

export type { StoreOptions, StoreTuning } from './backend.ts';

/** The store location `tag` (a release, a directory, a registry tag). The tag is checked before any request. */
export async function openImageStore(settings: StoreSettings, tag: string, options: StoreOptions = {}): Promise<ImageStore> {
  checkTag(tag, 'release tag');
  return backendOf(settings).open(settings, tag, options);
}

/**
 * The store's settings (names, credentials, sizes), checked before any request; with
 * `reach`, then whether the store answers and can be seen, so that a run that would end
 * in an upload fails in one line before it builds for minutes.
 */
export async function checkStoreSetup(settings: StoreSettings, tag: string, options: StoreOptions = {}, reach = false): Promise<void> {
  checkTag(tag, 'release tag');
  await backendOf(settings).checkSetup(settings, tag, options, reach);
}

/** Where puts to `tag` go, in words, for dry runs and notes. */
export function describeStore(settings: StoreSettings, tag: string, env: NodeJS.ProcessEnv = process.env): string {
  return backendOf(settings).describe(settings, tag, env);
}

/** Whether the config (with the environment) names a store at all. */
export function storeConfigured(settings: StoreSettings, env: NodeJS.ProcessEnv = process.env): boolean {
  return backendOf(settings).configured(settings, env);
}

/** What an upload node's fingerprint includes for the store, beside the tag. */
export function storeFingerprint(settings: StoreSettings): StoreFingerprint {
  return backendOf(settings).fingerprint(settings);
}
