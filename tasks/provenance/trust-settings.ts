// The config's `release.trust` as a type, apart from the code that loads it (trust.ts, which
// needs Node's crypto): a config's own tsc reaches this and may run without @types/node.

/** The config's `release.trust`; paths are relative to the project root. */
export interface TrustSettings {
  /** PEM public keys (ECDSA P-256) whose signatures are trusted. */
  readonly keys?: readonly string[];
  /** The GitHub Actions workflow whose keyless signatures are trusted. */
  readonly github?: { readonly repo: string; readonly workflow: string; readonly ref: string };
  /** A pinned Sigstore trusted root (`gh attestation trusted-root > trusted_root.json`) instead of TUF. */
  readonly trustedRoot?: string;
}
