// The `release:` keys of a store in a shared directory.

export interface DirectoryStoreDecl {
  /** Keep images in this shared directory (`{dir}/{tag}/`) instead of GitHub releases. */
  readonly dir: string;
}
