// Where an image's provenance lives beside it: the signed bundle of the bytes in
// `images/{name}/` (fetched with them, or made when they were uploaded) and, for an image
// built here, what the build recorded about itself (build-facts.ts). A download into
// `--dir` keeps the bundle beside the file too, under the name a release gives it, so
// `gh attestation verify --bundle` and `cosign verify-blob-attestation` find it.
import { dirname, join } from 'node:path';
import { imageFileName } from '../store/names.ts';

/** `{name}.qcow2.sigstore.json`, Sigstore's conventional name for an artifact's bundle. */
export function bundleFileName(name: string): string {
  return `${imageFileName(name)}.sigstore.json`;
}

/** The bundle beside an image file (`images/pve-9/pve-9.qcow2` -> `images/pve-9/pve-9.qcow2.sigstore.json`). */
export function bundlePathBeside(imagePath: string, name: string): string {
  return join(dirname(imagePath), bundleFileName(name));
}
