// What `release check | note | remove | retag --json` print: each answer in the engine's
// versioned envelope (`commandOutput`), its shape one variant of
// schema/pipeline-output.v1.schema.json (change both together).
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

export type ReleaseNoteOutput = CommandOutput<'release-note', { readonly tag: string } & NoteResult>;

/** `release note <version> --json`: the line the versioned release's description has (or would have). */
export function releaseNoteOutput(tag: string, note: NoteResult): ReleaseNoteOutput {
  return commandOutput('release-note', true, { tag, ...note });
}

export interface ReleaseRemoved {
  readonly tag: string;
  readonly dryRun: boolean;
  /** What was (or would be) deleted, by the store's names. */
  readonly deleted: readonly string[];
  /** Requested names the store does not hold (empty with --all). */
  readonly notOnRelease: readonly string[];
  /** Images whose entry in the store's index was (or would be) dropped. */
  readonly manifestUpdated: readonly string[];
}

export type ReleaseRemoveOutput = CommandOutput<'release-remove', ReleaseRemoved>;

export function releaseRemoveOutput(removed: ReleaseRemoved): ReleaseRemoveOutput {
  return commandOutput('release-remove', true, removed);
}

export interface ReleaseRetagged {
  /** The tag that was (or would be) moved. */
  readonly tag: string;
  /** The versioned release it points at. */
  readonly version: string;
  /** What the tag points at now (or would): a commit, a manifest digest. */
  readonly sha: string;
  readonly dryRun: boolean;
}

export type ReleaseRetagOutput = CommandOutput<'release-retag', ReleaseRetagged>;

export function releaseRetagOutput(retagged: ReleaseRetagged): ReleaseRetagOutput {
  return commandOutput('release-retag', true, retagged);
}
