// What the store, the upload node and the release and images commands need to know about
// the images of a repository. The config implements it; nothing under tasks/store reads
// the config directly.
import type { StoreSettings } from './backends.ts';

/** Inputs behind an image's cache key, recorded in the store so `release check` can name a change. */
export interface ImageSources {
  /**
   * The upstream base image: its path relative to the root, its SHA-256 when it is cached
   * here, and upstream's SHA-512 for it (known without the file, from SHA512SUMS).
   */
  readonly base: { readonly path: string; readonly sha256?: string; readonly sha512?: string };
  /** Template and shared files, relative path -> SHA-256. */
  readonly files: Readonly<Record<string, string>>;
}

export interface CurrentImageKey {
  /** The build's cache key; unknown on a machine that has not downloaded the base. */
  readonly cacheKey?: string;
  readonly sources: ImageSources;
}

import type { ImageBuildSettings } from '../provenance/image-statement.ts';
export interface ImageCatalog {
  readonly names: readonly string[];
  /** Absolute project root. */
  readonly root: string;
  /** Absolute `images/{name}/{name}.qcow2`. */
  imagePath(name: string): string;
  /** Absolute `images/{name}/{name}.qcow2.sha256`. */
  checksumPath(name: string): string;
  /** Absolute `images/{name}/image-version.txt`. */
  versionsPath(name: string): string;
  /** Absolute `images/{name}/.cache-key`. */
  cacheKeyPath(name: string): string;
  /**
   * Absolute `images/{name}/.sources.json`: the inputs of an image fetched from the store,
   * as its record named them (`{ cacheKey, sources }`), for a host that lacks the base.
   */
  sourcesPath(name: string): string;
  /** The cache key the image has if built from what is here now (the cached base), and the inputs behind it. */
  currentKey(name: string): Promise<CurrentImageKey>;
  /**
   * The inputs a run here would build the image from: currentKey's, except that a cached
   * base upstream has moved on from is replaced by its download before any build, so then
   * only upstream's new SHA-512 counts (and the key is unknown until it is downloaded).
   * `release check` and the remote cache both judge the store by this.
   */
  inputsToBuild(name: string, signal: AbortSignal): Promise<CurrentImageKey>;
  /** What the config says the image is built from and with, for its provenance statement. */
  buildSettings(name: string): ImageBuildSettings;
  /** Where `--publish` installs `{name}.img`; PIPELINE_PUBLISH_DIR overrides it. */
  readonly publishDir: string;
  readonly release: StoreSettings;
}
