// The provenance of an image in `images/{name}/`: the signed statement kept beside it when
// that bundle is about these bytes and these inputs (fetched with the image, or made when
// it was uploaded), else the statement this host makes of it (record facts, config, the
// facts its build recorded), unsigned.
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { ImageCatalog } from '../store/catalog.ts';
import { readLocalImage } from '../store/local-image.ts';
import { type ImageRecord, recordOf } from '../store/record.ts';
import type { ImageToPut } from '../store/store.ts';
import { readBuildFacts } from './build-facts.ts';
import { type ParsedBundle, parseBundle } from './bundle.ts';
import { imageStatement } from './image-statement.ts';
import { bundlePathBeside } from './local-files.ts';
import { inputsDisagreement, type Statement } from './statement.ts';

export interface LocalProvenance {
  readonly image: ImageToPut;
  /** The record a store would keep of it (what a bundle is held against). */
  readonly record: ImageRecord;
  readonly statement: Statement;
  /** The bundle file beside the image, as it is (for verification), when there is one. */
  readonly bundleBytes?: Uint8Array;
  /** That bundle, when it is about these bytes and inputs; `statement` is then its statement. */
  readonly signed?: { readonly bytes: Uint8Array; readonly parsed: ParsedBundle };
}

export async function localProvenance(catalog: ImageCatalog, name: string, env: NodeJS.ProcessEnv): Promise<LocalProvenance> {
  return localProvenanceOf(catalog, await readLocalImage(catalog, name), env);
}

/** The same, for an image already read (readLocalImage). */
export async function localProvenanceOf(catalog: ImageCatalog, image: ImageToPut, env: NodeJS.ProcessEnv): Promise<LocalProvenance> {
  const { name } = image;
  const record = recordOf(image, [], '');
  const bundleBytes = await readLocalBundle(bundlePathBeside(catalog.imagePath(name), name));
  let signed: LocalProvenance['signed'];
  if (bundleBytes) {
    const parsed = await parseBundle(bundleBytes);
    if (typeof parsed !== 'string' && inputsDisagreement(parsed.statement, name, record) === undefined) signed = { bytes: bundleBytes, parsed };
  }
  const statement = signed?.parsed.statement ?? imageStatement(image, catalog.buildSettings(name), await readBuildFacts(dirname(image.path)), env);
  return { image, record, statement, ...(bundleBytes ? { bundleBytes } : {}), ...(signed ? { signed } : {}) };
}

function readLocalBundle(path: string): Promise<Uint8Array | undefined> {
  return readFile(path).catch(() => undefined);
}
