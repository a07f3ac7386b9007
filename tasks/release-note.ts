// The seed's release phase, option A ("Images NOT Changed", the default): a versioned
// release is tag-only, and its description says where its images are, with the line
// "Images: See `latest` release". Written once, after what the description holds; written
// again it changes nothing. Backend-neutral: any store whose locations have descriptions.
import { Failure } from '../src/index.ts';
import type { LocationDescriptions } from './store/store.ts';

/** `Images: See \`latest\` release`, linked to that release's page when there is one. */
export function noteLine(tag: string, url?: string): string {
  return url ? `Images: See [\`${tag}\` release](${url})` : `Images: See \`${tag}\` release`;
}

/** The tag a description's note points at, linked or not; undefined when it has none. */
export function notedTag(text: string): string | undefined {
  return /^Images: See \[?`([^`\n]+)` release/m.exec(text)?.[1];
}

/** The description with the note added after what is there. */
export function withNote(text: string, line: string): string {
  const kept = text.replace(/\s+$/, '');
  return kept ? `${kept}\n\n${line}\n` : `${line}\n`;
}

export interface NoteResult {
  readonly version: string;
  /** The note as the description holds it (or would, with dryRun). */
  readonly line: string;
  /** Whether the description was (or would be) changed. */
  readonly changed: boolean;
  readonly dryRun: boolean;
}

/**
 * Notes in release `version`'s description that its images are on release `tag`. A
 * version that does not exist, or whose description points elsewhere, is a one-line
 * Failure (exit 2).
 */
export async function writeNote(
  descriptions: LocationDescriptions,
  version: string,
  tag: string,
  options: { readonly dryRun: boolean; readonly signal: AbortSignal },
): Promise<NoteResult> {
  const release = await descriptions.read(version, options.signal);
  if (!release)
    throw new Failure(
      'not-found',
      `release ${version} not found in ${descriptions.where}: create it first (a tag-only release is enough), or check the version`,
    );
  const noted = notedTag(release.text);
  if (noted !== undefined && noted !== tag) {
    throw new Failure(
      'usage',
      `release ${version}'s description already says its images are on release ${noted}, not ${tag}: edit that line by hand to change it`,
    );
  }
  if (noted === tag) {
    const line = release.text
      .split('\n')
      .find((candidate) => notedTag(candidate) === tag)!
      .trim();
    return { version, line, changed: false, dryRun: options.dryRun };
  }
  const line = noteLine(tag, (await descriptions.read(tag, options.signal))?.url);
  if (!options.dryRun) await descriptions.write(version, withNote(release.text, line), options.signal);
  return { version, line, changed: true, dryRun: options.dryRun };
}
