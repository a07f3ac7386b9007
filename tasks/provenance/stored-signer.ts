// `release check`: who signed each image on the store, and, with `release.trust`, whether
// that holds. An image the trust refuses is stale (a host would not take it), so the
// decision that follows rebuilds it.
import { isFailure, toFailure } from '../../src/index.ts';
import type { ReleaseImageSigner } from '../release-output.ts';
import type { ImageRecord } from '../store/record.ts';
import type { ImageStore } from '../store/store.ts';
import { parseBundle } from './bundle.ts';
import type { Trust } from './trust.ts';
import { verifyProvenance } from './verify.ts';

export interface StoredSigner {
  readonly signer: ReleaseImageSigner | null;
  /** With a trust: why the image is refused. */
  readonly refusal?: string;
}

export async function storedSigner(store: ImageStore, name: string, record: ImageRecord, trust: Trust | undefined, signal: AbortSignal): Promise<StoredSigner> {
  let bundle: Uint8Array | undefined;
  if (record.attachments?.provenance) {
    try {
      const opened = await store.open(name, signal);
      // Being replaced right now: judged by the record it will have, as the cache key is.
      if (opened.status !== 'ready') return { signer: null };
      bundle = await opened.readAttachment('provenance', signal);
    } catch (error) {
      if (!isFailure(error, 'integrity', 'not-found')) throw error;
      const reason = `its provenance bundle cannot be read (${toFailure(error).message})`;
      return { signer: null, ...(trust ? { refusal: reason } : {}) };
    }
  }
  const parsed = bundle ? await parseBundle(bundle) : undefined;
  const claimed: ReleaseImageSigner | null =
    parsed && typeof parsed !== 'string'
      ? { kind: parsed.signer.mode, id: parsed.signer.mode === 'key' ? parsed.signer.keyId : parsed.signer.identity, verified: false }
      : null;
  if (!trust) return { signer: claimed };
  const verdict = await verifyProvenance(trust, name, record, bundle);
  if (verdict.trusted) return { signer: claimed && { ...claimed, verified: true } };
  return { signer: claimed && { ...claimed, detail: verdict.reason }, refusal: verdict.reason };
}

interface Verdict {
  readonly name: string;
  readonly status: 'current' | 'stale';
  readonly reasons: readonly string[];
}

/** `verdict` with the image's signer, and stale when the trust refuses it; unchanged for an image the store does not hold. */
export async function withSigner<V extends Verdict>(
  verdict: V,
  store: ImageStore,
  record: ImageRecord | undefined,
  trust: Trust | undefined,
  signal: AbortSignal,
): Promise<V & { signer?: ReleaseImageSigner | null }> {
  if (!record) return verdict;
  const { signer, refusal } = await storedSigner(store, verdict.name, record, trust, signal);
  if (refusal === undefined) return { ...verdict, signer };
  return { ...verdict, signer, status: 'stale', reasons: [...verdict.reasons, `not trusted (release.trust): ${refusal}`] };
}

/** ` (provenance: key 3f2a…, verified)` for a text line; empty for an unsigned image. */
export function signerSuffix(signer: ReleaseImageSigner | null | undefined): string {
  if (!signer) return '';
  return ` (provenance: ${signer.kind === 'key' ? `key ${signer.id.slice(0, 12)}` : signer.id}${signer.verified ? ', verified' : ''})`;
}
