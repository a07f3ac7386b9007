// Whether this workflow run may still write the `latest` release: only a run of main's
// current head may. A re-run of an old run, or a run that waited while main moved on, is
// "superseded" (a newer run checks main's head itself), and a run for any other ref (a
// dispatch from a branch) never builds. Writes `superseded=true|false` and `head=<sha>` to
// $GITHUB_OUTPUT and says why in the log.
//
// Exit 0 with an answer; 2 when it cannot tell (the API refused or could not be reached):
// the step fails rather than guess. The tool's own guard stands behind this one: an upload
// never replaces an image built from a commit that is not an ancestor of its own.
//
// Environment (set by the runner): GITHUB_REF, GITHUB_SHA, GITHUB_REPOSITORY, GITHUB_API_URL,
// GITHUB_OUTPUT; GITHUB_TOKEN (a token that can read the repository).
import { appendFileSync } from 'node:fs';

const BRANCH = 'main';

function fail(message) {
  process.stderr.write(`superseded: ${message}\n`);
  process.exit(2);
}

function answer(superseded, head, why) {
  process.stdout.write(`${why}\n`);
  appendFileSync(process.env.GITHUB_OUTPUT ?? fail('GITHUB_OUTPUT is not set: run this as a workflow step'), `superseded=${superseded}\nhead=${head}\n`);
}

const ref = process.env.GITHUB_REF ?? fail('GITHUB_REF is not set');
const sha = process.env.GITHUB_SHA ?? fail('GITHUB_SHA is not set');
const repository = process.env.GITHUB_REPOSITORY ?? fail('GITHUB_REPOSITORY is not set');
const api = (process.env.GITHUB_API_URL || 'https://api.github.com').replace(/\/+$/, '');
const token = process.env.GITHUB_TOKEN;

if (ref !== `refs/heads/${BRANCH}`) {
  answer(true, '', `::notice::superseded: this run is for ${ref}; images are built only from refs/heads/${BRANCH}`);
} else {
  const url = `${api}/repos/${repository}/git/ref/heads/${BRANCH}`;
  let response;
  try {
    response = await fetch(url, {
      headers: { accept: 'application/vnd.github+json', 'x-github-api-version': '2022-11-28', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    fail(`cannot read ${BRANCH}'s head from ${api} (${error?.cause?.code ?? error?.message ?? error})`);
  }
  if (!response.ok) fail(`reading ${BRANCH}'s head of ${repository} failed: HTTP ${response.status}`);
  const head = (await response.json().catch(() => undefined))?.object?.sha;
  if (typeof head !== 'string' || !/^[0-9a-f]{40,64}$/.test(head)) fail(`GitHub's answer for ${BRANCH}'s head of ${repository} names no commit`);
  if (head === sha) answer(false, head, `${BRANCH} is at this run's commit ${sha.slice(0, 12)}: building`);
  else
    answer(
      true,
      head,
      `::notice::superseded: ${BRANCH} has moved on to ${head.slice(0, 12)} since this run's commit ${sha.slice(0, 12)}; the run for ${BRANCH}'s head builds it`,
    );
}
