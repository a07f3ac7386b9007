// Deciding whether an image's provenance bundle is trusted for the record a store keeps
// of it. In order, an image is refused when:
//
//   - there is no bundle;
//   - the bundle cannot be read (truncated, not a Sigstore bundle, no in-toto statement);
//   - its signer is not trusted (a key the trust does not name; a certificate for another
//     workflow, repository or ref, or from another issuer);
//   - it does not verify (signature, certificate chain, transparency log, timestamps);
//   - its statement is about another image or other bytes, or names other inputs than
//     the record (statement.ts: inputsDisagreement).
//
// Each refusal is one line (`Refusal.reason`) that names what is wrong.
import type { KeyObject } from 'node:crypto';
import type { ImageRecord } from '../store/record.ts';
import { type BundleSigner, describeSigner, GITHUB_ACTIONS_ISSUER, type ParsedBundle, parseBundle } from './bundle.ts';
import { shortKeyId } from './key-id.ts';
import { inputsDisagreement, type Statement } from './statement.ts';
import type { Trust } from './trust.ts';

export type ProvenanceVerdict =
  | { readonly trusted: true; readonly signer: BundleSigner; readonly statement: Statement }
  | { readonly trusted: false; readonly reason: string; readonly signer?: BundleSigner };

export async function verifyProvenance(trust: Trust, name: string, record: ImageRecord, bundle: Uint8Array | undefined): Promise<ProvenanceVerdict> {
  if (bundle === undefined) return { trusted: false, reason: 'it has no signed provenance' };
  const parsed = await parseBundle(bundle);
  if (typeof parsed === 'string') return { trusted: false, reason: parsed };
  const { signer } = parsed;
  const untrusted = (reason: string): ProvenanceVerdict => ({ trusted: false, reason, signer });

  if (signer.mode === 'key') {
    const key = trust.keys.get(signer.keyId);
    if (!key) {
      return untrusted(
        trust.keys.size
          ? `its provenance is signed by key ${shortKeyId(signer.keyId)}, which release.trust.keys does not name`
          : `its provenance is signed by key ${shortKeyId(signer.keyId)}, and release.trust names no keys`,
      );
    }
    const failed = await cryptographicFailure(parsed, { key });
    if (failed) return untrusted(`its provenance bundle does not verify (${failed})`);
  } else {
    const github = trust.github;
    if (!github) return untrusted(`its provenance is signed keyless by ${describeSigner(signer)}, and release.trust names no GitHub workflow`);
    const failed = await cryptographicFailure(parsed, { roots: await trust.trustedRoots() });
    if (failed) return untrusted(`its provenance bundle does not verify (${failed})`);
    const mismatch = identityMismatch(signer, github);
    if (mismatch) return untrusted(mismatch);
  }

  const disagreement = inputsDisagreement(parsed.statement, name, record);
  if (disagreement) return untrusted(`its signed provenance disagrees with the store's record: ${disagreement}`);
  return { trusted: true, signer, statement: parsed.statement };
}

/**
 * The certificate's identity against the trusted workflow: issued by GitHub Actions, to
 * that workflow file at that ref of that repository, for a run of that repository at that
 * ref (a pull request's run has a `refs/pull/…` ref).
 */
function identityMismatch(signer: Extract<BundleSigner, { mode: 'keyless' }>, github: NonNullable<Trust['github']>): string | undefined {
  const expected = `https://github.com/${github.repo}/${github.workflow}@${github.ref}`;
  const said = `its provenance is signed keyless by ${describeSigner(signer)}`;
  if (signer.issuer !== GITHUB_ACTIONS_ISSUER) return `${said}, whose issuer is not GitHub Actions (${GITHUB_ACTIONS_ISSUER})`;
  if (signer.identity !== expected) return `${said}; release.trust.github trusts ${expected}`;
  if (signer.repository !== undefined && signer.repository !== `https://github.com/${github.repo}`) {
    return `${said} for a run of ${signer.repository}; release.trust.github trusts runs of https://github.com/${github.repo}`;
  }
  if (signer.ref !== undefined && signer.ref !== github.ref) return `${said} for a run at ${signer.ref}; release.trust.github trusts ${github.ref}`;
  return undefined;
}

/** What fails when the bundle's signature (and, keyless, its certificate, log entry and timestamps) is checked; undefined when all hold. */
async function cryptographicFailure(parsed: ParsedBundle, material: { key: KeyObject } | { roots: readonly unknown[] }): Promise<string | undefined> {
  const { Verifier, toSignedEntity, toTrustMaterial } = await import('@sigstore/verify');
  const { TrustedRoot } = await import('@sigstore/protobuf-specs');
  type SignedEntityBundle = Parameters<typeof toSignedEntity>[0];
  try {
    if ('key' in material) {
      const empty = TrustedRoot.fromJSON({ mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1' });
      const trustMaterial = toTrustMaterial(empty, () => ({ publicKey: material.key, validFor: () => true }));
      // A key-signed bundle is made offline: no log entry, no timestamp, no certificate.
      new Verifier(trustMaterial, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 }).verify(toSignedEntity(parsed.bundle as SignedEntityBundle));
      return undefined;
    }
    const root = mergedRoot(material.roots.map((json) => TrustedRoot.fromJSON(json)));
    // The identity checked afterwards is read from this same certificate (bundle.ts).
    new Verifier(toTrustMaterial(root)).verify(toSignedEntity(parsed.bundle as SignedEntityBundle));
    return undefined;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    return `${typeof code === 'string' ? `${code}: ` : ''}${error instanceof Error ? error.message : String(error)}`;
  }
}

type Root = ReturnType<typeof import('@sigstore/protobuf-specs')['TrustedRoot']['fromJSON']>;

/** One trusted root holding every authority of several (public-good and GitHub's instance, as gh writes them). */
function mergedRoot(roots: readonly Root[]): Root {
  const [first] = roots;
  if (!first) throw new Error('no trusted root');
  return {
    ...first,
    tlogs: roots.flatMap((root) => root.tlogs),
    certificateAuthorities: roots.flatMap((root) => root.certificateAuthorities),
    ctlogs: roots.flatMap((root) => root.ctlogs),
    timestampAuthorities: roots.flatMap((root) => root.timestampAuthorities),
  };
}
