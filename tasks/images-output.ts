// What `images list | download --json` print: each answer in the engine's versioned
// envelope (`commandOutput`), its shape one variant of
// schema/pipeline-output.v1.schema.json (change both together).
import { commandOutput, type CommandOutput, type FailureKind } from '../src/index.ts';
import type { StoredImage } from './store/store.ts';

/** A location that holds no images, and where they are instead: the one its description notes, or the config's own. */
export interface ImagesElsewhere {
  readonly tag: string;
  readonly from: 'description' | 'config';
}

export interface ListedImageJson {
  readonly name: string;
  /** Bytes as stored, and how many pieces they are stored as. */
  readonly size: number;
  readonly pieces: number;
  readonly multipart: boolean;
  readonly state: StoredImage['state'];
  readonly detail?: string;
  /** From the image's record, when the store holds one. */
  readonly sha256?: string;
  readonly parts?: ReadonlyArray<{ readonly name: string; readonly size: number }>;
}

export type ImagesListOutput = CommandOutput<
  'images-list',
  { readonly tag: string; readonly images: readonly ListedImageJson[]; readonly imagesAt?: ImagesElsewhere }
>;

/** `images list --json`: always ok (an empty location is an answer). */
export function imagesListOutput(tag: string, stored: readonly StoredImage[], elsewhere: ImagesElsewhere | undefined): ImagesListOutput {
  const images = stored.map(
    (image): ListedImageJson => ({
      name: image.name,
      size: image.size,
      pieces: image.pieces,
      multipart: image.pieces > 1,
      state: image.state,
      ...(image.detail ? { detail: image.detail } : {}),
      ...(image.record ? { sha256: image.record.sha256, parts: image.record.parts } : {}),
    }),
  );
  return commandOutput('images-list', true, { tag, images, ...(elsewhere ? { imagesAt: { tag: elsewhere.tag, from: elsewhere.from } } : {}) });
}

export type DownloadedImageJson =
  | {
      readonly name: string;
      /** `present`: the file was there already with the right checksum. */
      readonly status: 'downloaded' | 'present';
      readonly path: string;
      readonly size: number;
      readonly sha256: string;
      /** Bytes fetched from the store, and bytes copied from local files that share them. */
      readonly fetched: number;
      readonly reused: ReadonlyArray<{ readonly path: string; readonly bytes: number }>;
      /** With --publish: the file installed in the publish directory. */
      readonly published?: string;
    }
  | { readonly name: string; readonly status: 'failed'; readonly kind: FailureKind; readonly error: string }
  | { readonly name: string; readonly status: 'cancelled' };

export type ImagesDownloadOutput = CommandOutput<
  'images-download',
  { readonly tag: string; readonly dir: string; readonly images: readonly DownloadedImageJson[] }
>;

/** `images download --json`: ok (exit 0) when every image is there, none failed or cancelled. */
export function imagesDownloadOutput(tag: string, dir: string, images: readonly DownloadedImageJson[]): ImagesDownloadOutput {
  return commandOutput(
    'images-download',
    images.every((image) => image.status === 'downloaded' || image.status === 'present'),
    { tag, dir, images },
  );
}
