// What a store backend is: one implementation of the image store (tasks/store/store.ts)
// with its own settings, registered in backends.ts. Everything above the registry talks to
// a backend only through this interface, so a new store is one folder and one entry.
import type { z } from 'zod';
import type { Json } from '../../src/index.ts';
import type { CommonStoreDecl } from './release-decl.ts';
import type { ImageStore } from './store.ts';

export type { CommonStoreDecl } from './release-decl.ts';

/** Resolved common settings: the tag is always known. */
export interface CommonStoreSettings extends Omit<CommonStoreDecl, 'tag'> {
  readonly tag: string;
}

/** Pacing a backend's network waits by; tests shrink them. */
export interface StoreTuning {
  /** Milliseconds per unit of backoff between attempts (attempt n waits n^2 units). */
  readonly retryBaseMs?: number;
  /** Attempts for one transfer before giving up. */
  readonly transferAttempts?: number;
  /** Longest rate-limit reset worth waiting for before failing with the reset time. */
  readonly maxRateLimitWaitSeconds?: number;
}

export interface StoreOptions {
  /** Environment to read credentials and overrides from (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
  readonly tuning?: StoreTuning;
  /** Notes a backend wants the user to see (a damaged index rebuilt, …). */
  readonly log?: (line: string) => void;
}

/** What an upload node's fingerprint includes for its store: settings that change where bytes go, and the environment that overrides them. */
export interface StoreFingerprint {
  readonly params: Readonly<Record<string, Json>>;
  readonly env: readonly string[];
}

export interface StoreBackend<S> {
  /** The tag of its settings (`backend: 'github'`). */
  readonly name: string;
  /** Keys that only its settings have: settings holding one are this backend's. */
  readonly ownKeys: readonly string[];
  /** Its own keys' types (the common keys are checked by the registry). */
  readonly schema: z.ZodRawShape;
  /** Checks beyond types, when the config loads (a repository's shape): a `config` Failure naming the key. */
  check(settings: S & CommonStoreSettings): void;
  /** Whether the settings (with the environment) name a store at all; the remote cache keeps quiet when not. */
  configured(settings: S & CommonStoreSettings, env: NodeJS.ProcessEnv): boolean;
  /** The store location `tag`. */
  open(settings: S & CommonStoreSettings, tag: string, options: StoreOptions): Promise<ImageStore>;
  /**
   * Names, credentials and sizes, checked without a request; with `reach`, whether the store
   * answers and can be written, so a run that ends in an upload fails before it builds.
   */
  checkSetup(settings: S & CommonStoreSettings, tag: string, options: StoreOptions, reach: boolean): Promise<void>;
  fingerprint(settings: S & CommonStoreSettings): StoreFingerprint;
  /** Where images of `tag` live, in words (`release latest of acme/images`), from settings alone. */
  describe(settings: S & CommonStoreSettings, tag: string, env: NodeJS.ProcessEnv): string;
}
