// What `release check --json` prints: its answer in the engine's versioned envelope
// (`commandOutput`), its shape one variant of schema/pipeline-output.v1.schema.json
// (change both together).
import { commandOutput, type CommandOutput } from '../src/index.ts';
import type { NoteResult } from './release-note.ts';

export interface ReleaseImageSigner {
  /** `key`: a public key, by its id (SHA-256 of its DER SubjectPublicKeyInfo); `keyless`: a Sigstore certificate's identity. */
  readonly kind: 'key' | 'keyless';
  readonly id: string;
  /** Verified against the config's release.trust (false when no trust is configured, or it failed). */
  readonly verified: boolean;
  /** Why it is not trusted, when a trust is configured and refuses it. */
  readonly detail?: string;
}

export interface ReleaseImageVerdict {
  readonly name: string;
  readonly status: 'current' | 'stale';
  readonly reasons: readonly string[];
  /** Present (true) when it is stale because its record in the store is damaged: the reason says how. */
  readonly damaged?: true;
  /** The base image it would be built from: its cached path, and upstream's SHA-512 when known (a CI job keys its base-image cache by it). */
  readonly base?: { readonly path: string; readonly sha512?: string };
  /** Who signed the image's provenance (null: unsigned); absent for an image the store does not hold. */
  readonly signer?: ReleaseImageSigner | null;
}

export type ReleaseCheckOutput = CommandOutput<
  'release-check',
  {
    readonly tag: string;
    readonly stale: readonly string[];
    readonly images: readonly ReleaseImageVerdict[];
    /** The decision in words, as the last line of the plain output says it. */
    readonly decision: string;
    /** `--note VERSION`: the note a versioned release's description has (or would have). */
    readonly note?: NoteResult;
  }
>;

/** `release check --json`: ok (exit 0) when no image is stale. */
export function releaseCheckOutput(tag: string, images: readonly ReleaseImageVerdict[], decision: string, note?: NoteResult): ReleaseCheckOutput {
  const stale = images.filter((image) => image.status === 'stale').map((image) => image.name);
  return commandOutput('release-check', stale.length === 0, { tag, stale, images, decision, ...(note ? { note } : {}) });
}
