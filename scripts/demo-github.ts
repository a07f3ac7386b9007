// A loopback stand-in for GitHub's release API (the tests' server), for trying the
// release commands on the demo without a GitHub account or the network:
//
//   node --import=tsx scripts/demo-github.ts &
//   export GITHUB_API_URL=… GITHUB_REPOSITORY=… GITHUB_TOKEN=…   (the lines it prints)
//   npx pipeline --config demo/pipeline.config.ts upload:latest
//
// It keeps the release in memory (and a temp directory) until it is stopped (Ctrl-C).
import { GitHubServer } from '../test/support/github-server.ts';

const server = await GitHubServer.start({ token: 'demo-token', owner: 'example', repo: 'images' });
process.stdout.write(
  [
    `# a loopback GitHub at ${server.url}, release repository ${server.owner}/${server.repo}; stop it with Ctrl-C`,
    `export GITHUB_API_URL=${server.url} GITHUB_REPOSITORY=${server.owner}/${server.repo} GITHUB_TOKEN=${server.token}`,
    '',
  ].join('\n'),
);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void server.close().then(() => process.exit(0));
  });
}
