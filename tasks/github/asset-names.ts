// Release asset names: what belongs to which image, split(1) part suffixes, temporary
// upload names, and the validation that keeps a name from the network from becoming a path.

const SAFE_ASSET_NAME = /^[A-Za-z0-9._-]+$/;
const IMAGE_NAME = /^[a-z0-9][a-z0-9.-]*$/;
export const MANIFEST_ASSET = 'images.json';
/** New assets are uploaded under `{final}.uploading-{run}` and renamed into place once all are up. */
const TEMP_MARKER = '.uploading-';

/** Throws unless `name` can safely become a file name inside a target directory. */
export function assertSafeAssetName(name: string): string {
  if (!SAFE_ASSET_NAME.test(name) || name.includes('..') || name === '.') {
    throw new Error(`refusing release asset name ${JSON.stringify(name)}: only letters, digits, '.', '_' and '-' are allowed, and no '..'`);
  }
  return name;
}

export function isValidImageName(name: string): boolean {
  return IMAGE_NAME.test(name);
}

export function wholeAssetName(image: string): string {
  return `${image}.qcow2`;
}

export function checksumAssetName(image: string): string {
  return `${image}.qcow2.sha256`;
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
  throw new Error(`too many parts (${index + 1}); raise the part size`);
}

export function partAssetName(image: string, index: number): string {
  return `${image}.qcow2.part${partSuffix(index)}`;
}

export function tempAssetName(finalName: string, runId: string): string {
  return `${finalName}${TEMP_MARKER}${runId}`;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export type ImageAssetRole = 'whole' | 'part' | 'checksum' | 'temp';

/** Which role an asset plays for `image`, or undefined when it belongs to another image. */
export function imageAssetRole(image: string, assetName: string): ImageAssetRole | undefined {
  const base = escapeRegExp(wholeAssetName(image));
  const pattern = new RegExp(`^${base}(\\.sha256|\\.part[a-z]{2,4})?(${escapeRegExp(TEMP_MARKER)}[a-z0-9]+)?$`);
  const match = pattern.exec(assetName);
  if (!match) return undefined;
  if (match[2]) return 'temp';
  if (match[1] === '.sha256') return 'checksum';
  if (match[1]) return 'part';
  return 'whole';
}

/** Image names present on a release, judged by their `.qcow2`, parts or `.sha256` assets. */
export function imagesOnRelease(assetNames: readonly string[]): string[] {
  const names = new Set<string>();
  for (const asset of assetNames) {
    const match = /^(.+)\.qcow2(?:\.sha256|\.part[a-z]{2,4})?$/.exec(asset);
    if (match && isValidImageName(match[1]!)) names.add(match[1]!);
  }
  return [...names].sort();
}
