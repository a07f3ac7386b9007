// The git commit an image is uploaded from, and the guard that keeps `latest` from going
// back in time: an upload never replaces an image whose recorded commit is not an ancestor
// of its own (a re-run of an old workflow run, a dispatch from a branch, an old checkout on
// a build host), unless `--force`. The store asks the guard when it decides to replace
// (PutOptions.mayReplace), so every backend applies it the same way.
//
// The upload runs after the engine has brought the image up to date with the tree, so the
// commit checked out at upload time is one whose tree the image matches.
import { execFile, Failure } from '../src/index.ts';
import type { ImageRecord, SourceCommit } from './store/record.ts';

const short = (sha: string): string => sha.slice(0, 12);

async function git(root: string, args: readonly string[], signal: AbortSignal): Promise<{ exitCode: number; stdout: string }> {
  // A tree git refuses to read (another user's, not listed in safe.directory) counts as no checkout.
  return execFile('git', args, signal, { cwd: root, nothrow: true, env: { GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C' } });
}

/**
 * HEAD of the git checkout holding `root`, and whether anything under `root` differs from
 * it (tracked changes or untracked files; ignored files such as images/ do not count).
 * Undefined outside a git checkout (or without git).
 */
export async function readSourceCommit(root: string, signal: AbortSignal): Promise<SourceCommit | undefined> {
  const head = await git(root, ['rev-parse', '--verify', '--quiet', 'HEAD^{commit}'], signal);
  const sha = head.stdout.trim();
  if (head.exitCode !== 0 || !/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/.test(sha)) return undefined;
  const status = await git(root, ['status', '--porcelain', '--untracked-files=normal', '--', '.'], signal);
  if (status.exitCode !== 0) return undefined;
  return { sha, dirty: status.stdout.trim() !== '' };
}

/** How `recorded` stands to `own` in the clone at `root`. */
export async function ancestry(root: string, recorded: string, own: string, signal: AbortSignal): Promise<'ancestor' | 'not-ancestor' | 'unknown'> {
  if (recorded === own) return 'ancestor';
  const known = await git(root, ['cat-file', '-e', `${recorded}^{commit}`], signal);
  if (known.exitCode !== 0) return 'unknown';
  const result = await git(root, ['merge-base', '--is-ancestor', recorded, own], signal);
  if (result.exitCode === 0) return 'ancestor';
  if (result.exitCode === 1) return 'not-ancestor';
  return 'unknown';
}

export interface AncestryGuardOptions {
  /** The checkout the upload runs in. */
  readonly root: string;
  readonly name: string;
  /** Where the image is, for messages (`release latest of acme/images`). */
  readonly location: string;
  /** The uploading tree's commit; undefined outside a git checkout. */
  readonly own: SourceCommit | undefined;
  readonly force: boolean;
  readonly signal: AbortSignal;
  readonly log: (line: string) => void;
}

/**
 * PutOptions.mayReplace for an upload from `own`: refuses, in one line naming both commits,
 * to replace an image whose recorded commit is not an ancestor of `own`; `force` replaces it
 * anyway and logs that it did. A record without a commit (written before records had one)
 * is replaceable.
 */
export function ancestryGuard(options: AncestryGuardOptions): (current: ImageRecord) => Promise<void> {
  return async (current) => {
    const recorded = current.commit?.sha;
    if (recorded === undefined) return;
    const { own, name, location } = options;
    const held = `${location} holds ${name} built from commit ${short(recorded)}`;
    let refusal: { readonly why: string; readonly todo: string } | undefined;
    if (!own) {
      refusal = {
        why: `${held}, and this tree is not a git checkout, so it cannot be shown to be newer`,
        todo: `upload from a checkout of ${short(recorded)} or a later commit`,
      };
    } else {
      const relation = await ancestry(options.root, recorded, own.sha, options.signal);
      if (relation === 'unknown') {
        refusal = {
          why: `${held}, which this clone does not have (a shallow or stale clone?)`,
          todo: `fetch it (git fetch origin) so its ancestry to this tree's ${short(own.sha)} can be checked`,
        };
      } else if (relation === 'not-ancestor') {
        refusal = {
          why: `${held}, which is not an ancestor of this tree's commit ${short(own.sha)} (an older or diverged checkout)`,
          todo: `not replacing it; upload from ${short(recorded)} or a later commit`,
        };
      }
    }
    if (refusal === undefined) return;
    if (options.force) {
      options.log(`${refusal.why}; replacing it anyway (--force)`);
      return;
    }
    throw new Failure('setup', `${refusal.why}: ${refusal.todo}, or pass --force to replace it anyway`);
  };
}
