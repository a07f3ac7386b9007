// `pipeline verify` with `release.trust`: an image in images/{name}/ whose bytes match
// their .sha256 must also carry a trusted bundle about those bytes and the inputs its
// record would name (fetched with it, or made when it was uploaded from here).
import type { ImageCatalog } from '../store/catalog.ts';
import { localProvenance } from './local.ts';
import { loadTrust, type Trust } from './trust.ts';
import { verifyProvenance } from './verify.ts';

/** Why the image's provenance is not trusted, or undefined; absent when the config names no trust. */
export type LocalProvenanceCheck = (name: string) => Promise<string | undefined>;

export function localProvenanceCheck(catalog: ImageCatalog, env: NodeJS.ProcessEnv = process.env): LocalProvenanceCheck | undefined {
  const settings = catalog.release.trust;
  if (!settings) return undefined;
  let trust: Promise<Trust> | undefined;
  return async (name) => {
    trust ??= loadTrust(settings, { root: catalog.root, env });
    const local = await localProvenance(catalog, name, env);
    const verdict = await verifyProvenance(await trust, name, local.record, local.bundleBytes);
    return verdict.trusted ? undefined : verdict.reason;
  };
}
