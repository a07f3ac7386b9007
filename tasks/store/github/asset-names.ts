// Release asset names: what belongs to which image, split(1) part suffixes, temporary
// upload names and per-image record assets.
//
//   {image}.qcow2                  the image, when it fits one asset
//   {image}.qcow2.partaa, …        or its parts, in split(1) order
//   {image}.qcow2.sha256           its sha256sum line (the contract external consumers use)
//   {image}.qcow2.json             its record: what the index entry says, plus the asset ids
//                                  of the bytes it describes (written only by its uploaders)
//   {image}.qcow2.chunks           its attachments, when it has them: the chunk index, and
//   {image}.qcow2.sigstore.json    the signed provenance bundle
//   {final}.uploading-{run}        a new asset on its way to {final}; a record under such a
//                                  name, fully uploaded, is the commit of that run's swap
//   images.json                    the index of every image, rebuilt from the records
import { Failure } from '../../../src/index.ts';
import { type AttachmentKind, INDEX_NAME } from '../record.ts';
import { imageFileName, isValidImageName } from '../names.ts';

export const INDEX_ASSET = INDEX_NAME;
const TEMP_MARKER = '.uploading-';

export type AssetRole = 'whole' | 'part' | 'checksum' | 'record' | 'attachment';

const ATTACHMENT_SUFFIX: Readonly<Record<AttachmentKind, string>> = { 'chunk-index': '.chunks', provenance: '.sigstore.json' };

export interface ImageAsset {
  readonly role: AssetRole;
  /** The run that uploaded it under a temporary name; undefined once it has its final name. */
  readonly run?: string;
  /** The name it has (or will have) when in place. */
  readonly finalName: string;
}

export const wholeAssetName = imageFileName;

export function checksumAssetName(image: string): string {
  return `${image}.qcow2.sha256`;
}

export function recordAssetName(image: string): string {
  return `${image}.qcow2.json`;
}

export function attachmentAssetName(image: string, kind: AttachmentKind): string {
  return `${image}.qcow2${ATTACHMENT_SUFFIX[kind]}`;
}

/**
 * GNU split(1)'s default suffixes, which sort in order: aa … yz, then zaaa … zyzz (the
 * length grows so that `cat name.part*` stays in order).
 */
export function partSuffix(index: number): string {
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  const word = (value: number, width: number): string => {
    let suffix = '';
    for (let i = 0; i < width; i++, value = Math.floor(value / 26)) suffix = letters[value % 26]! + suffix;
    return suffix;
  };
  if (index < 25 * 26) return word(index, 2);
  if (index < 25 * 26 + 25 * 26 * 26) return `z${word(index - 25 * 26, 3)}`;
  throw new Failure('usage', `too many parts (${index + 1}); raise the part size`);
}

export function partAssetName(image: string, index: number): string {
  return `${image}.qcow2.part${partSuffix(index)}`;
}

export function tempAssetName(finalName: string, run: string): string {
  return `${finalName}${TEMP_MARKER}${run}`;
}

/** The run of a temporary name (`images.json.uploading-…` included), or undefined for a final name. */
export function tempRun(assetName: string): string | undefined {
  const at = assetName.lastIndexOf(TEMP_MARKER);
  if (at < 0) return undefined;
  const run = assetName.slice(at + TEMP_MARKER.length);
  return /^[a-z0-9-]+$/.test(run) ? run : undefined;
}

function withoutTemp(assetName: string): string {
  const run = tempRun(assetName);
  return run === undefined ? assetName : assetName.slice(0, -(TEMP_MARKER.length + run.length));
}

const ROLE_SUFFIX = /^(.+)\.qcow2(\.sha256|\.json|\.part[a-z]{2,4}|\.chunks|\.sigstore\.json)?$/;

function roleOf(suffix: string | undefined): AssetRole {
  if (suffix === undefined) return 'whole';
  if (suffix === '.sha256') return 'checksum';
  if (suffix === '.json') return 'record';
  if (Object.values(ATTACHMENT_SUFFIX).includes(suffix)) return 'attachment';
  return 'part';
}

/** What an asset is to the image it belongs to, and which image that is; undefined for anything else. */
export function parseAssetName(assetName: string): (ImageAsset & { readonly image: string }) | undefined {
  const finalName = withoutTemp(assetName);
  const match = ROLE_SUFFIX.exec(finalName);
  if (!match || !isValidImageName(match[1]!)) return undefined;
  const run = tempRun(assetName);
  return { image: match[1]!, role: roleOf(match[2]), finalName, ...(run !== undefined ? { run } : {}) };
}

/** What an asset is to `image`, or undefined when it belongs to another image (or none). */
export function imageAssetRole(image: string, assetName: string): ImageAsset | undefined {
  const parsed = parseAssetName(assetName);
  if (parsed?.image !== image) return undefined;
  const { image: _, ...rest } = parsed;
  return rest;
}

/** True for the bytes of an image (whole or a part) under their final name. */
export function isFinalData(image: string, assetName: string): boolean {
  const role = imageAssetRole(image, assetName);
  return role !== undefined && role.run === undefined && (role.role === 'whole' || role.role === 'part');
}
