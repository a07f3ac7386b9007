// The per-image record asset `{image}.qcow2.json`: the image's record (what its index entry
// says) plus the ids of the assets that hold its bytes and checksum. Only uploaders of
// that image write it. Under a temporary name, fully uploaded, it is the commit of a
// replacement: everything the swap needs is on the release and named in it, so any
// later writer can finish the swap (or undo it) exactly as its uploader would have.
import { z } from 'zod';
import { canonicalRecord, imageRecordSchema, type ImageRecord } from '../record.ts';

const recordDocSchema = z.object({
  schemaVersion: z.literal(1),
  name: z.string(),
  image: imageRecordSchema,
  /** Final name -> id of the asset that holds (or will hold) it: data pieces, then the checksum. */
  assets: z.array(z.object({ name: z.string(), id: z.number().int().positive() })).min(2),
});

export type RecordDoc = z.infer<typeof recordDocSchema>;

export function serializeRecordDoc(doc: RecordDoc): string {
  return `${JSON.stringify({ schemaVersion: 1, name: doc.name, image: canonicalRecord(doc.image), assets: doc.assets }, null, 2)}\n`;
}

/** The doc in `text` when it is one for `image`; undefined for anything else (never trusted further). */
export function parseRecordDoc(text: string, image: string): RecordDoc | undefined {
  try {
    const parsed = recordDocSchema.safeParse(JSON.parse(text));
    return parsed.success && parsed.data.name === image ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export function recordDoc(name: string, image: ImageRecord, assets: RecordDoc['assets']): RecordDoc {
  return { schemaVersion: 1, name, image, assets };
}
