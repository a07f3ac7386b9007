// Byte sizes from config and environment, and the asset limits an upload splits at.
import { Failure } from '../../../src/index.ts';
import type { GitHubSettings } from './settings.ts';

/** GitHub rejects release assets above 2 GiB. */
export const GITHUB_MAX_ASSET_SIZE = 2_147_483_648;
/** 1.9 GiB: parts stay clear of the limit. */
export const DEFAULT_PART_SIZE = 2_040_109_465;

const UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/** `2147483648`, `512K`, `1.9GiB` -> bytes (binary units, as split(1) reads them). */
export function parseByteSize(text: string, what = 'size'): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const factor = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || factor === undefined) {
    throw new Failure('setup', `${what}: cannot read "${text}" as a byte size (e.g. 2147483648, 512K, 1.9GiB)`);
  }
  const bytes = Math.floor(Number(match[1]) * factor);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Failure('setup', `${what}: "${text}" must be a positive size`);
  return bytes;
}

export interface TransferLimits {
  readonly maxAssetSize: number;
  readonly partSize: number;
}

export function resolveTransferLimits(release: GitHubSettings, env: NodeJS.ProcessEnv = process.env): TransferLimits {
  const maxAssetSize = env.PIPELINE_MAX_ASSET_SIZE
    ? parseByteSize(env.PIPELINE_MAX_ASSET_SIZE, 'PIPELINE_MAX_ASSET_SIZE')
    : (release.maxAssetSize ?? GITHUB_MAX_ASSET_SIZE);
  const partSize = env.PIPELINE_PART_SIZE
    ? parseByteSize(env.PIPELINE_PART_SIZE, 'PIPELINE_PART_SIZE')
    : (release.partSize ?? Math.min(DEFAULT_PART_SIZE, maxAssetSize));
  if (partSize > maxAssetSize) {
    throw new Failure('setup', `part size ${partSize} is larger than the maximum asset size ${maxAssetSize}`);
  }
  if (maxAssetSize > GITHUB_MAX_ASSET_SIZE) {
    throw new Failure('setup', `maximum asset size ${maxAssetSize} is above GitHub's limit of ${GITHUB_MAX_ASSET_SIZE} bytes`);
  }
  return { maxAssetSize, partSize };
}
