// The OCI registry backend of the image store: everything else under tasks/store/oci is its
// private detail. Settings: `release: { registry: 'ghcr.io/acme/images', tag: 'latest' }`,
// with `plainHttp: true` for a registry without TLS (HTTPS otherwise, trusting the
// system's CAs and NODE_EXTRA_CA_CERTS) and `maxBlobSize` for the largest layer.
import { z } from 'zod';
import { Failure } from '../../../src/index.ts';
import type { StoreBackend } from '../backend.ts';
import { checkTag } from '../names.ts';
import type { ImageStore } from '../store.ts';
import type { UploadTuning } from './blob-upload.ts';
import type { HelperRunner } from './credentials.ts';
import { DEFAULT_MAX_BLOB_SIZE, OciStore } from './oci-store.ts';
import { indexRepository, parseRegistry, type RegistryLocation } from './reference.ts';
import { RegistryClient } from './registry-client.ts';
import type { OciStoreDecl } from './settings.ts';

export type { OciStoreDecl } from './settings.ts';

export type OciSettings = OciStoreDecl;

export interface OciOptions extends UploadTuning {
  readonly env?: NodeJS.ProcessEnv;
  readonly log?: (line: string) => void;
  readonly runHelper?: HelperRunner;
  readonly readPieceBytes?: number;
}

function locationOf(settings: OciSettings, tag: string): RegistryLocation {
  checkTag(tag, 'release tag');
  if (tag.length > 128) throw new Failure('usage', `release tag ${tag} is longer than a registry tag may be (128 characters)`);
  return parseRegistry(settings.registry, settings.plainHttp === true);
}

function clientOf(location: RegistryLocation, options: OciOptions): RegistryClient {
  return new RegistryClient(location, {
    env: options.env ?? process.env,
    ...(options.runHelper ? { runHelper: options.runHelper } : {}),
    ...(options.retryBaseMs !== undefined ? { retryBaseMs: options.retryBaseMs } : {}),
  });
}

export function openOciStore(settings: OciSettings, tag: string, options: OciOptions = {}): ImageStore {
  const location = locationOf(settings, tag);
  const maxBlobSize = settings.maxBlobSize ?? DEFAULT_MAX_BLOB_SIZE;
  if (!Number.isSafeInteger(maxBlobSize) || maxBlobSize < 1)
    throw new Failure('config', `release.maxBlobSize: ${maxBlobSize} is not a positive number of bytes`);
  return new OciStore(clientOf(location, options), location, tag, { ...options, maxBlobSize }, options.log);
}

/**
 * The registry location and tag, checked without a request; then, with `reach`, one look
 * at the index repository: the registry answers, and lets these credentials (or none) in.
 */
export async function checkOciSetup(settings: OciSettings, tag: string, options: OciOptions, reach: boolean): Promise<void> {
  const location = locationOf(settings, tag);
  if (!reach) return;
  await clientOf(location, options).tags(indexRepository(location), AbortSignal.timeout(30_000));
}

export function describeOciLocation(settings: OciSettings, tag: string): string {
  return `registry ${parseRegistry(settings.registry, settings.plainHttp === true).reference} (tag ${tag})`;
}

export const ociBackend: StoreBackend<OciStoreDecl> = {
  name: 'oci',
  ownKeys: ['registry', 'plainHttp', 'maxBlobSize'],
  schema: { registry: z.string(), plainHttp: z.boolean(), maxBlobSize: z.number().int().positive() },

  check(settings) {
    parseRegistry(settings.registry, settings.plainHttp === true);
  },

  configured() {
    return true;
  },

  async open(settings, tag, options) {
    return openOciStore(settings, tag, {
      env: options.env ?? process.env,
      ...(options.log ? { log: options.log } : {}),
      ...(options.tuning?.retryBaseMs !== undefined ? { retryBaseMs: options.tuning.retryBaseMs } : {}),
      ...(options.tuning?.transferAttempts !== undefined ? { attempts: options.tuning.transferAttempts } : {}),
    });
  },

  async checkSetup(settings, tag, options, reach) {
    await checkOciSetup(settings, tag, { env: options.env ?? process.env }, reach);
  },

  fingerprint(settings) {
    return { params: { registry: settings.registry, plainHttp: settings.plainHttp ?? false, maxBlobSize: settings.maxBlobSize ?? null }, env: [] };
  },

  describe(settings, tag) {
    return describeOciLocation(settings, tag);
  },
};
