// Writes a keyless bundle to GitHub's artifact attestations of the repository whose
// workflow made it (`POST /repos/{owner}/{repo}/attestations`, the job needs
// `attestations: write`), so that `gh attestation verify {image} --repo {owner}/{repo}`
// finds it without this tool. The store keeps the bundle either way: a failure here is a
// note, not a failed upload.
import { toFailure } from '../../src/index.ts';

export async function recordAttestation(bundle: Uint8Array, env: NodeJS.ProcessEnv, log: (line: string) => void): Promise<void> {
  const repository = env.GITHUB_REPOSITORY?.trim();
  const token = env.GITHUB_TOKEN?.trim() || env.GH_TOKEN?.trim();
  if (!repository || !token) {
    log('provenance: not written to GitHub attestations (no GITHUB_REPOSITORY or GITHUB_TOKEN in this job)');
    return;
  }
  const [{ Octokit }, { apiFetch }] = await Promise.all([import('@octokit/core'), import('../store/http/api-fetch.ts')]);
  const octokit = new Octokit({
    auth: token,
    baseUrl: (env.GITHUB_API_URL?.trim() || 'https://api.github.com').replace(/\/+$/, ''),
    userAgent: 'pipeline-images',
    request: { fetch: apiFetch as unknown as typeof fetch, signal: AbortSignal.timeout(60_000) },
    log: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
  });
  const [owner, repo] = repository.split('/');
  try {
    const response = await octokit.request('POST /repos/{owner}/{repo}/attestations', {
      owner: owner ?? '',
      repo: repo ?? '',
      bundle: JSON.parse(Buffer.from(bundle).toString('utf8')),
    });
    const id = (response.data as { id?: unknown }).id;
    log(`provenance: written to GitHub attestations of ${repository}${typeof id === 'number' ? ` (id ${id})` : ''}; gh attestation verify finds it`);
  } catch (error) {
    const status = (error as { status?: unknown }).status;
    const hint = status === 403 || status === 401 ? ': give the job `permissions: attestations: write`' : '';
    log(`provenance: not written to GitHub attestations of ${repository} (${toFailure(error).message.split(token).join('***')})${hint}; the store holds it`);
  }
}
