// `release: { trust: … }`: whom a host trusts to have built its images. Public keys (PEM
// files, for key-signed bundles) and GitHub Actions workflows (for keyless bundles, whose
// Fulcio certificates chain to Sigstore's trusted root: public-good through TUF, cached, or
// a pinned trusted_root.json for hosts without network).
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { Failure } from '../../src/index.ts';
import { keyIdOf } from './key-id.ts';
import type { TrustSettings } from './trust-settings.ts';

export type { TrustSettings } from './trust-settings.ts';

export const trustSettingsSchema = z
  .object({
    keys: z.array(z.string().min(1)).min(1).optional(),
    github: z
      .object({
        repo: z.string().regex(/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/, 'use owner/name'),
        workflow: z.string().regex(/^\.github\/workflows\/[^/]+\.ya?ml$/, "use the workflow's path, .github/workflows/{file}.yml"),
        ref: z.string().regex(/^refs\//, 'use a full ref, refs/heads/main or refs/tags/v1'),
      })
      .strict()
      .optional(),
    trustedRoot: z.string().min(1).optional(),
  })
  .strict()
  .refine((trust) => trust.keys !== undefined || trust.github !== undefined, { message: 'name keys, a github workflow, or both' });

export interface Trust {
  /** Trusted keys by key id. */
  readonly keys: ReadonlyMap<string, KeyObject>;
  readonly github?: TrustSettings['github'];
  /** Sigstore's trusted root as protobuf JSON objects, loaded on first need (keyless bundles only). */
  trustedRoots(): Promise<readonly unknown[]>;
}

export interface TrustOptions {
  readonly root: string;
  readonly env: NodeJS.ProcessEnv;
}

/** Reads the trusted keys now (a bad key file is a config error before any download); the trusted root on first need. */
export async function loadTrust(settings: TrustSettings, options: TrustOptions): Promise<Trust> {
  const keys = new Map<string, KeyObject>();
  for (const file of settings.keys ?? []) {
    const key = await readPublicKey(resolve(options.root, file), file);
    keys.set(keyIdOf(key), key);
  }
  let roots: Promise<readonly unknown[]> | undefined;
  return {
    keys,
    ...(settings.github ? { github: settings.github } : {}),
    trustedRoots: () => {
      roots ??=
        settings.trustedRoot !== undefined
          ? pinnedTrustedRoots(resolve(options.root, settings.trustedRoot), settings.trustedRoot)
          : tufTrustedRoot(options.env);
      roots.catch(() => (roots = undefined));
      return roots;
    },
  };
}

async function readPublicKey(path: string, shown: string): Promise<KeyObject> {
  let pem: Buffer;
  try {
    pem = await readFile(path);
  } catch (error) {
    throw new Failure('config', `release.trust.keys: cannot read ${shown} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new Failure('config', `release.trust.keys: ${shown} is not a PEM public key (openssl ec -in signing.pem -pubout writes one)`);
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new Failure('config', `release.trust.keys: ${shown} is not an ECDSA P-256 public key`);
  }
  return key;
}

/**
 * A trusted_root.json as `gh attestation trusted-root` writes it: one JSON document, or
 * one per line (public-good Sigstore and GitHub's own instance).
 */
export async function pinnedTrustedRoots(path: string, shown: string): Promise<readonly unknown[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new Failure('config', `release.trust.trustedRoot: cannot read ${shown} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  const documents: unknown[] = [];
  try {
    documents.push(JSON.parse(text));
  } catch {
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        documents.push(JSON.parse(line));
      } catch {
        throw new Failure('config', `release.trust.trustedRoot: ${shown} is not a trusted root (JSON, or JSON lines as gh attestation trusted-root writes)`);
      }
    }
  }
  for (const document of documents) {
    const media = (document as { mediaType?: unknown } | null)?.mediaType;
    if (typeof media !== 'string' || !media.startsWith('application/vnd.dev.sigstore.trustedroot')) {
      throw new Failure('config', `release.trust.trustedRoot: ${shown} is not a Sigstore trusted root (mediaType ${String(media)})`);
    }
  }
  if (!documents.length) throw new Failure('config', `release.trust.trustedRoot: ${shown} is empty`);
  return documents;
}

/** Sigstore public-good's trusted root through TUF, cached under ~/.cache; the cache alone when TUF cannot be reached. */
async function tufTrustedRoot(env: NodeJS.ProcessEnv): Promise<readonly unknown[]> {
  const { getTrustedRoot } = await import('@sigstore/tuf');
  const { TrustedRoot } = await import('@sigstore/protobuf-specs');
  const cacheHome = env.XDG_CACHE_HOME?.trim() || join(env.HOME?.trim() || homedir(), '.cache');
  const options = {
    cachePath: join(cacheHome, 'pipeline', 'sigstore-tuf'),
    ...(env.PIPELINE_SIGSTORE_TUF_URL?.trim() ? { mirrorURL: env.PIPELINE_SIGSTORE_TUF_URL.trim() } : {}),
    timeout: 10_000,
    retry: 1,
  };
  try {
    return [TrustedRoot.toJSON(await getTrustedRoot(options))];
  } catch (online) {
    try {
      return [TrustedRoot.toJSON(await getTrustedRoot({ ...options, forceCache: true }))];
    } catch {
      throw new Failure(
        'network',
        `cannot get Sigstore's trusted root through TUF (${online instanceof Error ? online.message : String(online)}): on a host without network, pin one with release.trust.trustedRoot (gh attestation trusted-root > trusted_root.json)`,
      );
    }
  }
}
