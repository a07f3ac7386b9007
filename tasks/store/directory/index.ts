// The shared-directory backend of the image store (an NFS or CIFS mount several hosts see).
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { z } from 'zod';
import { Failure } from '../../../src/index.ts';
import type { StoreBackend } from '../backend.ts';
import { DirectoryStore } from './directory-store.ts';
import type { DirectoryStoreDecl } from './settings.ts';

export type { DirectoryStoreDecl } from './settings.ts';

export const directoryBackend: StoreBackend<DirectoryStoreDecl> = {
  name: 'directory',
  ownKeys: ['dir'],
  schema: { dir: z.string() },

  check() {},

  configured() {
    return true;
  },

  async open(settings, tag) {
    return new DirectoryStore(resolve(settings.dir), tag);
  },

  async checkSetup(settings) {
    if (!(await stat(settings.dir).catch(() => undefined))?.isDirectory()) {
      throw new Failure('setup', `release.dir ${settings.dir} is not a directory: create it (or mount the shared storage there)`);
    }
  },

  fingerprint(settings) {
    return { params: { dir: settings.dir }, env: [] };
  },

  describe(settings, tag) {
    return `store ${resolve(settings.dir, tag)}`;
  },
};
