// The `release:` keys of a store in an OCI registry.

export interface OciStoreDecl {
  /** An OCI registry location (`ghcr.io/acme/images`): each image is `{registry}/{name}:{tag}`. */
  readonly registry: string;
  /** Plain http to the registry (one without TLS); default false: HTTPS with the system's CAs and NODE_EXTRA_CA_CERTS. */
  readonly plainHttp?: boolean;
  /** Largest layer in bytes (default 4 GiB); a larger image goes up as several layers in order. */
  readonly maxBlobSize?: number;
}
