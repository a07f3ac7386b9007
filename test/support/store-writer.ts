// One writer of the store contract's process tests, as its own process: puts the image a
// spec file describes into the store its settings name, then exits 0 (or 1 with the
// failure's one line). `node --import=tsx test/support/store-writer.ts spec.json`
import { readFile } from 'node:fs/promises';
import { storeSettings, type ReleaseDecl } from '../../tasks/store/backends.ts';
import { openImageStore } from '../../tasks/store/open.ts';
import type { ImageToPut } from '../../tasks/store/store.ts';

export interface WriterSpec {
  readonly release: ReleaseDecl;
  readonly tag: string;
  readonly env: Readonly<Record<string, string>>;
  /** The image as `readLocalImage` would give it, attachments as base64. */
  readonly image: Omit<ImageToPut, 'attachments'> & { readonly attachments?: Readonly<Record<string, string>> };
  readonly force?: boolean;
}

const spec = JSON.parse(await readFile(process.argv[2]!, 'utf8')) as WriterSpec;
const attachments = Object.fromEntries(Object.entries(spec.image.attachments ?? {}).map(([kind, base64]) => [kind, Buffer.from(base64, 'base64')]));
try {
  const store = await openImageStore(storeSettings(spec.release, spec.tag), spec.tag, { env: { ...process.env, ...spec.env }, tuning: { retryBaseMs: 2 } });
  // The contract tests time a kill from here: the store is open, the put begins.
  process.stdout.write('putting\n');
  const result = await store.put({ ...spec.image, attachments }, { force: spec.force ?? false, signal: AbortSignal.timeout(120_000), log: () => {} });
  process.stdout.write(`${JSON.stringify(result)}\n`);
} catch (error) {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
