// The provenance an upload stores with an image. A signed bundle beside the image that is
// about these bytes and inputs goes up as it is (fetched with the image, or made by an
// earlier upload: one signature, one log entry per image); otherwise the statement is
// signed here when a key or GitHub Actions' OIDC token is available, and the upload says
// which. Without either, the image goes up unsigned, with a note.
import { writeFileAtomic } from '../../src/index.ts';
import type { ImageCatalog } from '../store/catalog.ts';
import type { ImageToPut } from '../store/store.ts';
import { type BundleSigner, describeSigner } from './bundle.ts';
import { recordAttestation } from './github-attestation.ts';
import { keyIdOf } from './key-id.ts';
import { localProvenanceOf } from './local.ts';
import { bundlePathBeside } from './local-files.ts';
import { readSigningKey, type SigningMode, signingMode, signStatement } from './sign.ts';
import { createPublicKey } from 'node:crypto';

export interface UploadProvenance {
  /** The bundle to store as the image's `provenance` attachment; undefined: unsigned. */
  readonly bundle?: Uint8Array;
  /** What the upload says of it, in one line (also logged). */
  readonly note: string;
  /** After the store took it: keep the bundle beside the image, and in Actions write it to GitHub's attestations. */
  stored(): Promise<void>;
}

export interface UploadProvenanceOptions {
  readonly env: NodeJS.ProcessEnv;
  /** `--force`: sign anew even when a signed bundle of these bytes is kept. */
  readonly force: boolean;
  readonly log: (line: string) => void;
}

export async function provenanceForUpload(catalog: ImageCatalog, image: ImageToPut, options: UploadProvenanceOptions): Promise<UploadProvenance> {
  const { env, log } = options;
  const local = await localProvenanceOf(catalog, image, env);
  const mode = signingMode(env);
  const nothingToDo = async () => {};
  if (local.signed && !options.force && (await sameSigner(local.signed.parsed.signer, mode))) {
    const note = `provenance: stores the signed statement kept with ${image.name} (${describeSigner(local.signed.parsed.signer)})`;
    log(note);
    return { bundle: local.signed.bytes, note, stored: nothingToDo };
  }
  if (mode.kind === 'none') {
    const note = `provenance: ${image.name} goes up unsigned: set PIPELINE_SIGNING_KEY to an ECDSA P-256 key, or run in GitHub Actions with permissions id-token: write`;
    log(note);
    return { note, stored: nothingToDo };
  }
  const signed = await signStatement(local.statement, mode, env);
  const note = `provenance: signed ${image.name}'s statement ${signed.keyless ? 'keyless as' : 'with'} ${signed.signer}`;
  log(note);
  return {
    bundle: signed.bundle,
    note,
    async stored() {
      await writeFileAtomic(bundlePathBeside(image.path, image.name), signed.bundle);
      if (signed.keyless && env.GITHUB_ACTIONS === 'true') await recordAttestation(signed.bundle, env, log);
    },
  };
}

/**
 * Whether a kept bundle is what signing here would make: anything, when this host cannot
 * sign; the same key; a keyless bundle in a keyless job (whose identity is known only
 * once Fulcio answers, and whose workflow made or fetched it).
 */
async function sameSigner(signer: BundleSigner, mode: SigningMode): Promise<boolean> {
  if (mode.kind === 'none') return true;
  if (mode.kind === 'keyless') return signer.mode === 'keyless';
  if (signer.mode !== 'key') return false;
  return keyIdOf(createPublicKey(await readSigningKey(mode.keyPath))) === signer.keyId;
}
