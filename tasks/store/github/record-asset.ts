// The per-image record asset `{image}.qcow2.json`: the image's record (what its index entry
// says) plus the ids of the assets that hold its bytes and checksum. Only uploaders of
// that image write it. Under a temporary name, fully uploaded, it is the commit of a
// replacement: everything the swap needs is on the release and named in it, so any
// later writer can finish the swap (or undo it) exactly as its uploader would have.
import { z } from 'zod';
import { quoteUntrusted } from '../../untrusted-text.ts';
import { canonicalRecord, imageRecordSchema, type ImageRecord } from '../record.ts';
import { parseAssetName } from './asset-names.ts';

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
  const read = readRecordDoc(text, image);
  return 'doc' in read ? read.doc : undefined;
}

/** The doc in `text`, or what is wrong with it (completing "{image}.qcow2.json …"). */
export function readRecordDoc(text: string, image: string): { readonly doc: RecordDoc } | { readonly problem: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { problem: 'is not valid JSON' };
  }
  const parsed = recordDocSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { problem: `is not a valid record (${issue ? `${issue.path.join('.') || 'top level'}: ${issue.message}` : 'bad shape'})` };
  }
  if (parsed.data.name !== image) return { problem: `is the record of ${quoteUntrusted(parsed.data.name)}, not of ${image}` };
  // The names it binds become asset names in a swap: only this image's own final names.
  const foreign = parsed.data.assets.find((entry) => {
    const role = parseAssetName(entry.name);
    return role?.image !== image || role.run !== undefined || role.role === 'record';
  });
  if (foreign) return { problem: `names ${quoteUntrusted(foreign.name)}, which is not one of ${image}'s assets` };
  return { doc: parsed.data };
}

export function recordDoc(name: string, image: ImageRecord, assets: RecordDoc['assets']): RecordDoc {
  return { schemaVersion: 1, name, image, assets };
}
