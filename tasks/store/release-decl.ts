// The config's `release:` as a type, apart from the registry (backends.ts) that puts it to
// work: a config's own tsc reaches these declarations and nothing of a backend's code,
// whose types need Node's (a consumer may check its config without @types/node). Each
// backend's keys come from its own folder's settings.ts.
import type { TrustSettings } from '../provenance/trust-settings.ts';
import type { DirectoryStoreDecl } from './directory/settings.ts';
import type { GitHubStoreDecl } from './github/settings.ts';
import type { OciStoreDecl } from './oci/settings.ts';

/** The `release:` keys every store has, whichever backend holds the images. */
export interface CommonStoreDecl {
  /** Release (or tag) the `{image}:upload` nodes and `upload:latest` use (default `latest`). */
  readonly tag?: string;
  /**
   * Fetch an image from the store instead of building it when the store holds one built
   * from the same inputs (default true; `--no-remote-cache` turns it off for a run).
   */
  readonly remoteCache?: boolean;
  /**
   * Whose signed provenance this host trusts (docs/provenance.md; paths relative to the
   * root): with it, downloads, `--publish`, `verify` and the remote cache refuse an image
   * whose bundle is missing, does not verify, comes from another signer, or is about other
   * bytes or inputs.
   */
  readonly trust?: TrustSettings;
}

/** One backend's keys, with every other backend's own keys forbidden, so a config names one store. */
type Only<Own, Others> = Own & { readonly [K in Exclude<keyof Others, keyof Own>]?: never };

/** The config's `release:`: the common keys and one backend's. */
export type ReleaseDecl = CommonStoreDecl &
  (
    | Only<GitHubStoreDecl, DirectoryStoreDecl & OciStoreDecl>
    | Only<DirectoryStoreDecl, GitHubStoreDecl & OciStoreDecl>
    | Only<OciStoreDecl, GitHubStoreDecl & DirectoryStoreDecl>
  );
