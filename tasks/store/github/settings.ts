// The `release:` keys of a store on GitHub releases.
import { z } from 'zod';

export interface GitHubStoreDecl {
  /** `owner/name`; GITHUB_REPOSITORY overrides it. */
  readonly repo?: string;
  /** REST API base URL (GitHub Enterprise, loopback in tests); GITHUB_API_URL overrides it. */
  readonly apiUrl?: string;
  /** Largest asset uploaded whole, in bytes (GitHub: 2 GiB). PIPELINE_MAX_ASSET_SIZE overrides it. */
  readonly maxAssetSize?: number;
  /** Size of each part of a split image, in bytes. PIPELINE_PART_SIZE overrides it. */
  readonly partSize?: number;
}

export type GitHubSettings = GitHubStoreDecl;

export const githubSettingsShape = {
  repo: z.string().optional(),
  apiUrl: z.string().optional(),
  maxAssetSize: z.number().int().positive().optional(),
  partSize: z.number().int().positive().optional(),
};
