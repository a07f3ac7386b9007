// The registry of store backends: the one place that names them. A config's `release:`
// settings belong to the backend whose own keys they hold (`dir`: a shared directory;
// `repo`, `apiUrl`, …: GitHub releases, also the default when none is named), and become a
// tagged union here, so everything else dispatches on `settings.backend`.
import { z } from 'zod';
import { Failure } from '../../src/index.ts';
import { trustSettingsSchema } from '../provenance/trust.ts';
import type { CommonStoreSettings, StoreBackend } from './backend.ts';
import { directoryBackend, type DirectoryStoreDecl } from './directory/index.ts';
import { githubBackend, type GitHubStoreDecl } from './github/index.ts';
import { ociBackend, type OciStoreDecl } from './oci/index.ts';
import type { ReleaseDecl } from './release-decl.ts';

export type { ReleaseDecl };

/** Every backend, the default (used when settings name none of the others' keys) first. */
const BACKENDS = [githubBackend, directoryBackend, ociBackend] as const;

/** Resolved `release:` settings, tagged with their backend. */
export type StoreSettings = CommonStoreSettings &
  (
    | ({ readonly backend: 'github' } & GitHubStoreDecl)
    | ({ readonly backend: 'directory' } & DirectoryStoreDecl)
    | ({ readonly backend: 'oci' } & OciStoreDecl)
  );

const commonShape = {
  tag: z.string().optional(),
  remoteCache: z.unknown().superRefine((value, ctx) => {
    if (typeof value !== 'boolean') {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(value)} is not a boolean; use true (fetch matching images from the store) or false` });
    }
  }),
  trust: trustSettingsSchema,
};

/**
 * The shape of `release:` for the config check: every backend's keys (so a misspelt key is
 * named with its nearest match among them all), and settings that mix two backends' own
 * keys refused in one line.
 */
export const releaseDeclSchema = z
  .object(Object.assign({}, commonShape, ...BACKENDS.map((backend) => backend.schema)) as z.ZodRawShape)
  .partial()
  .strict()
  .superRefine((value, ctx) => {
    const owners = BACKENDS.filter((backend) => backend.ownKeys.some((key) => (value as Record<string, unknown>)[key] !== undefined));
    if (owners.length > 1) {
      const keys = owners.map((backend) => backend.ownKeys.find((key) => (value as Record<string, unknown>)[key] !== undefined)!);
      ctx.addIssue({ code: 'custom', message: `${keys.join(' and ')} name different stores (${owners.map((backend) => backend.name).join(', ')}); keep one` });
    }
  });

function backendNamed(name: StoreSettings['backend']): StoreBackend<never> {
  const backend = BACKENDS.find((candidate) => candidate.name === name);
  if (!backend) throw new Failure('config', `release: no store backend ${JSON.stringify(name)}`);
  return backend as StoreBackend<never>;
}

/** The backend that holds images for these settings. */
export function backendOf(settings: StoreSettings): StoreBackend<StoreSettings> {
  return backendNamed(settings.backend) as StoreBackend<StoreSettings>;
}

/** `release:` as the config declares it (already shape-checked) -> tagged settings; `tag` is the resolved default tag. */
export function storeSettings(decl: ReleaseDecl | undefined, tag: string): StoreSettings {
  const given = (decl ?? {}) as Readonly<Record<string, unknown>>;
  const owner = BACKENDS.find((backend) => backend.ownKeys.some((key) => given[key] !== undefined)) ?? BACKENDS[0];
  const settings = { ...given, tag, backend: owner.name } as StoreSettings;
  backendOf(settings).check(settings);
  return settings;
}
