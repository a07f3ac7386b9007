// Reading a Sigstore bundle of an image's provenance: its JSON checked against Sigstore's
// bundle format, its DSSE payload as an in-toto statement, and who it claims signed it (a
// key by id, or a Fulcio certificate's identity). Nothing here verifies a signature:
// verify.ts does, and only its answer is trusted.
import { IN_TOTO_PAYLOAD_TYPE, parseStatement, type Statement } from './statement.ts';

/** Bundles are small; anything larger than this is not one of ours. */
export const MAX_BUNDLE_BYTES = 4 * 1024 * 1024;

/** GitHub Actions' OIDC issuer: the only one whose certificates say which workflow signed. */
export const GITHUB_ACTIONS_ISSUER = 'https://token.actions.githubusercontent.com';

/** Fulcio's certificate extensions this tool reads (https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md). */
export const FULCIO_OID = {
  issuerV1: '1.3.6.1.4.1.57264.1.1',
  issuer: '1.3.6.1.4.1.57264.1.8',
  buildSignerUri: '1.3.6.1.4.1.57264.1.9',
  sourceRepositoryUri: '1.3.6.1.4.1.57264.1.12',
  sourceRepositoryRef: '1.3.6.1.4.1.57264.1.14',
  runInvocationUri: '1.3.6.1.4.1.57264.1.21',
} as const;

export type BundleSigner =
  | { readonly mode: 'key'; readonly keyId: string }
  | {
      readonly mode: 'keyless';
      /** The certificate's subject alternative name: for GitHub Actions, the workflow file at its ref. */
      readonly identity: string;
      readonly issuer?: string;
      readonly repository?: string;
      readonly ref?: string;
      readonly invocation?: string;
    };

export interface ParsedBundle {
  // The library's own type; kept opaque here so that this module loads no Sigstore code.
  readonly bundle: unknown;
  readonly statement: Statement;
  readonly signer: BundleSigner;
}

/** Parses a stored bundle; a string says why it is not a usable one (`a truncated bundle`, …). */
export async function parseBundle(bytes: Uint8Array): Promise<ParsedBundle | string> {
  if (bytes.length > MAX_BUNDLE_BYTES) return `its provenance bundle is ${bytes.length} bytes, more than a bundle can be`;
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return 'its provenance bundle is not JSON (truncated or damaged)';
  }
  const sigstoreBundle: typeof import('@sigstore/bundle') = await import('@sigstore/bundle');
  const { bundleFromJSON, isBundleWithDsseEnvelope } = sigstoreBundle;
  let bundle: ReturnType<typeof bundleFromJSON>;
  try {
    // bundleFromJSON checks the shape Sigstore's format requires (assertBundle).
    bundle = bundleFromJSON(json);
  } catch (error) {
    return `its provenance bundle is not a Sigstore bundle (${error instanceof Error ? error.message : String(error)})`;
  }
  if (!isBundleWithDsseEnvelope(bundle)) return 'its provenance bundle signs no statement (no DSSE envelope)';
  const envelope = bundle.content.dsseEnvelope;
  if (envelope.payloadType !== IN_TOTO_PAYLOAD_TYPE)
    return `its provenance bundle signs a ${envelope.payloadType || 'typeless'} payload, not an in-toto statement`;
  const statement = parseStatement(envelope.payload);
  if (typeof statement === 'string') return `its provenance bundle is unusable: ${statement}`;
  const material = bundle.verificationMaterial.content;
  let signer: BundleSigner;
  switch (material.$case) {
    case 'publicKey':
      signer = { mode: 'key', keyId: material.publicKey.hint };
      break;
    case 'certificate':
      signer = await certificateSigner(material.certificate.rawBytes);
      break;
    case 'x509CertificateChain': {
      const leaf = material.x509CertificateChain.certificates[0];
      if (!leaf) return 'its provenance bundle has an empty certificate chain';
      signer = await certificateSigner(leaf.rawBytes);
      break;
    }
    default:
      return 'its provenance bundle names no key or certificate';
  }
  return { bundle, statement, signer };
}

/** Who a Fulcio certificate says it was issued to. */
export async function certificateSigner(der: Uint8Array): Promise<BundleSigner> {
  const { X509Certificate } = await import('@sigstore/core');
  let certificate: InstanceType<typeof X509Certificate>;
  try {
    certificate = X509Certificate.parse(Buffer.from(der));
  } catch {
    return { mode: 'keyless', identity: 'an unreadable certificate' };
  }
  const extension = (oid: string): string | undefined => {
    const value = certificate.extension(oid)?.value;
    return value === undefined ? undefined : derString(value);
  };
  const issuer = extension(FULCIO_OID.issuer) ?? extension(FULCIO_OID.issuerV1);
  const repository = extension(FULCIO_OID.sourceRepositoryUri);
  const ref = extension(FULCIO_OID.sourceRepositoryRef);
  const invocation = extension(FULCIO_OID.runInvocationUri);
  return {
    mode: 'keyless',
    identity: certificate.subjectAltName ?? 'a certificate without a subject alternative name',
    ...(issuer !== undefined ? { issuer } : {}),
    ...(repository !== undefined ? { repository } : {}),
    ...(ref !== undefined ? { ref } : {}),
    ...(invocation !== undefined ? { invocation } : {}),
  };
}

export function describeSigner(signer: BundleSigner): string {
  if (signer.mode === 'key') return `key ${signer.keyId.slice(0, 12)}`;
  return signer.issuer && signer.issuer !== GITHUB_ACTIONS_ISSUER ? `${signer.identity} (issuer ${signer.issuer})` : signer.identity;
}

/**
 * Fulcio's newer extensions hold a DER UTF8String; the first ones (issuer v1, workflow
 * fields) hold the raw text.
 */
function derString(value: Buffer): string {
  if (value.length >= 2 && value[0] === 0x0c) {
    let length = value[1]!;
    let offset = 2;
    if (length & 0x80) {
      const count = length & 0x7f;
      length = 0;
      for (let i = 0; i < count; i++) length = length * 256 + (value[2 + i] ?? 0);
      offset = 2 + count;
    }
    if (offset + length === value.length) return value.subarray(offset).toString('utf8');
  }
  return value.toString('utf8');
}
