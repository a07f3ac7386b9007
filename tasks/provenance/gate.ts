// The provenance check between a store and a host: `images download` (with or without
// `--publish`) and the remote cache's fetch hand it each image the store opens, before any
// byte moves. With `release.trust` configured, an image whose bundle is missing, does not
// verify, comes from an untrusted signer, or is about other bytes or inputs than its record
// is refused: an `integrity` Failure in one line, so nothing is installed (a download) or
// the image is built instead (the remote cache). Without trust, images pass as before,
// with a note when one is signed but not verified.
import { Failure, fsyncPath, isFailure, writeFileAtomic } from '../../src/index.ts';
import type { OpenedImage } from '../store/store.ts';
import { describeSigner, parseBundle } from './bundle.ts';
import { bundlePathBeside } from './local-files.ts';
import { loadTrust, type Trust, type TrustSettings } from './trust.ts';
import { verifyProvenance } from './verify.ts';
import { rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { buildFactsPath } from './build-facts.ts';

type ReadyImage = Extract<OpenedImage, { status: 'ready' }>;

export interface ProvenanceGate {
  /** Whether a trust is configured (refusals happen) or not (notes only). */
  readonly enforcing: boolean;
  /** getImage's `accept`: throws an `integrity` Failure for an image it refuses; `note` gets what the user should know. */
  accept(image: ReadyImage, signal: AbortSignal, note: (line: string) => void): Promise<void>;
  /** The bundle of the image last accepted under `name` (undefined: it has none). */
  bundleOf(name: string): Uint8Array | undefined;
  /** Keeps the bundle of `name` beside the file at `imagePath`, or removes one left from other bytes. */
  keepBeside(name: string, imagePath: string): Promise<void>;
  /**
   * The same for an image the remote cache fetched into `images/{name}/`, in two steps:
   * the bundle is written to a temp name now, and moved into place by `commit` right after
   * the image (which also drops the facts of the build the image replaced).
   */
  stageBeside(name: string, imagePath: string, tempPath: (path: string) => string): Promise<{ commit(): Promise<void> }>;
}

export interface GateOptions {
  readonly trust: TrustSettings | undefined;
  readonly root: string;
  readonly env: NodeJS.ProcessEnv;
}

/** Loads the trust (its keys now: a bad key file fails before any download). */
export async function provenanceGate(options: GateOptions): Promise<ProvenanceGate> {
  const trust: Trust | undefined = options.trust ? await loadTrust(options.trust, { root: options.root, env: options.env }) : undefined;
  const bundles = new Map<string, Uint8Array | undefined>();
  return {
    enforcing: trust !== undefined,
    async accept(image, signal, note) {
      bundles.delete(image.name);
      bundles.set(image.name, await acceptedBundle(trust, image, signal, note));
    },
    bundleOf: (name) => bundles.get(name),
    async keepBeside(name, imagePath) {
      const bundle = bundles.get(name);
      const path = bundlePathBeside(imagePath, name);
      if (bundle) await writeFileAtomic(path, bundle);
      else await rm(path, { force: true });
    },
    async stageBeside(name, imagePath, tempPath) {
      const bundle = bundles.get(name);
      const path = bundlePathBeside(imagePath, name);
      const temp = bundle ? tempPath(path) : undefined;
      if (temp && bundle) {
        await writeFile(temp, bundle);
        await fsyncPath(temp);
      }
      return {
        async commit() {
          if (temp) await rename(temp, path);
          else await rm(path, { force: true });
          await rm(buildFactsPath(dirname(imagePath)), { force: true });
        },
      };
    },
  };
}

/** What the store serves as the image's provenance bundle, or why those bytes are not the bundle its record names. */
async function readBundle(image: ReadyImage, signal: AbortSignal): Promise<{ bundle?: Uint8Array; unreadable?: string }> {
  try {
    return image.record?.attachments?.provenance ? { bundle: await image.readAttachment('provenance', signal) } : {};
  } catch (error) {
    // Bytes that are not what the record names: as bad as a bundle that does not verify.
    if (!isFailure(error, 'integrity')) throw error;
    return { unreadable: 'its provenance bundle is not the one its record names' };
  }
}

/**
 * The bundle to keep beside an accepted image (undefined: none). Without a trust every
 * image is accepted, with a note on what its bundle says; with one, an image is accepted
 * only when its bundle verifies against its record, else an `integrity` Failure says why.
 */
async function acceptedBundle(trust: Trust | undefined, image: ReadyImage, signal: AbortSignal, note: (line: string) => void): Promise<Uint8Array | undefined> {
  const { name } = image;
  const { bundle, unreadable } = await readBundle(image, signal);
  if (!trust) {
    if (unreadable) note(`${name}: ${unreadable}; not verified (no release.trust in the config)`);
    else if (bundle) {
      const parsed = await parseBundle(bundle);
      const signer = typeof parsed === 'string' ? `unreadable: ${parsed}` : `signed by ${describeSigner(parsed.signer)}`;
      note(`${name}: provenance ${signer}, not verified (no release.trust in the config)`);
    }
    return unreadable ? undefined : bundle;
  }
  const refuse = (reason: string): never => {
    throw new Failure('integrity', `not trusted (release.trust): ${reason}`);
  };
  if (unreadable) refuse(unreadable);
  const record = image.record ?? refuse('the store keeps no record of it to hold its provenance against');
  if (image.sha256 !== record.sha256) refuse(`the store serves it as SHA-256 ${image.sha256}, its record says ${record.sha256}`);
  const verdict = await verifyProvenance(trust, name, record, bundle);
  if (!verdict.trusted) return refuse(verdict.reason);
  note(`${name}: provenance verified: signed by ${describeSigner(verdict.signer)}`);
  return bundle;
}
