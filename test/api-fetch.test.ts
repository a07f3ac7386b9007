// The fetch octokit's API requests go through (node:http, not Node's undici fetch), against
// loopback servers: redirects are followed as fetch follows them, the token never goes to
// another origin, an abort rejects with the signal's reason, a body cut short is an error,
// and octokit reads answers and failures through it as before.
import test from 'ava';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { apiFetch } from '../tasks/store/http/api-fetch.ts';
import { createGitHubClient } from '../tasks/store/github/client.ts';
import { ReleaseApi } from '../tasks/store/github/release-api.ts';
import { GitHubServer } from './support/github-server.ts';
import { throwsFailure } from './support/failures.ts';

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  body: string;
}

/** A loopback server answering with `handle`; records every request it saw. */
async function serve(t: { teardown(fn: () => unknown): void }, handle: (request: http.IncomingMessage, response: http.ServerResponse, seen: Seen) => void) {
  const seen: Seen[] = [];
  const server = http.createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
    request.on('end', () => {
      const entry = { method: request.method!, url: request.url!, authorization: request.headers.authorization, body };
      seen.push(entry);
      handle(request, response, entry);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  server.unref();
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

test('redirects are followed; the Authorization header stays with its origin; a 303 turns a POST into a GET', async (t) => {
  const other = await serve(t, (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' }).end('{"where":"other"}');
  });
  const api = await serve(t, (request, response) => {
    if (request.url === '/moved') return void response.writeHead(301, { location: '/here' }).end();
    if (request.url === '/away') return void response.writeHead(302, { location: `${other.url}/there` }).end();
    if (request.url === '/posted') return void response.writeHead(303, { location: '/result' }).end();
    response.writeHead(200, { 'content-type': 'application/json', 'x-twice': ['a', 'b'] }).end(JSON.stringify({ path: request.url }));
  });
  const headers = { authorization: 'Bearer secret-token', accept: 'application/json' };

  const moved = await apiFetch(`${api.url}/moved`, { headers });
  t.is(moved.status, 200);
  t.true(moved.redirected);
  t.is(moved.url, `${api.url}/here`);
  t.deepEqual(await moved.json(), { path: '/here' });
  t.is(moved.headers.get('X-Twice'), 'a, b', 'repeated headers are joined as fetch joins them');
  t.is(api.seen.at(-1)!.authorization, 'Bearer secret-token', 'the same origin gets the token');

  const away = await apiFetch(`${api.url}/away`, { headers });
  t.deepEqual(await away.json(), { where: 'other' });
  t.is(other.seen.length, 1);
  t.is(other.seen[0]!.authorization, undefined, 'another origin never gets the token');

  const posted = await apiFetch(`${api.url}/posted`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: '{"a":1}' });
  t.deepEqual(await posted.json(), { path: '/result' });
  t.deepEqual(
    api.seen.slice(-2).map(({ method, body }) => ({ method, body })),
    [
      { method: 'POST', body: '{"a":1}' },
      { method: 'GET', body: '' },
    ],
  );

  const manual = await apiFetch(`${api.url}/moved`, { headers, redirect: 'manual' });
  t.is(manual.status, 301);
  t.is(manual.headers.get('location'), '/here');
});

test('an abort rejects with the signal reason; a body cut short and a refused connection are errors', async (t) => {
  const server = await serve(t, (request, response) => {
    if (request.url === '/short') {
      response.writeHead(200, { 'content-length': '100' });
      response.write('only a little');
      setTimeout(() => response.destroy(), 20);
      return;
    }
    // Never answers: the client has to give up on its own.
  });
  const controller = new AbortController();
  const reason = new Error('stop now');
  setTimeout(() => controller.abort(reason), 50);
  t.is(await t.throwsAsync(apiFetch(`${server.url}/hang`, { signal: controller.signal })), reason);
  const timeout = await t.throwsAsync(apiFetch(`${server.url}/hang`, { signal: AbortSignal.timeout(50) }), { any: true });
  t.is((timeout as DOMException).name, 'TimeoutError');
  await t.throwsAsync(apiFetch(`${server.url}/short`), { message: /cut short/ });
  await t.throwsAsync(apiFetch('http://127.0.0.1:9/refused'), { message: /ECONNREFUSED/ });
});

test('octokit reads releases and assets through it, and its failures keep their kinds', async (t) => {
  const server = await GitHubServer.start({ defaultPerPage: 2 });
  t.teardown(() => server.close());
  server.createRelease('latest');
  for (const name of ['a', 'b', 'c', 'd', 'e']) await server.putAsset('latest', `${name}.txt`, Buffer.from(name));
  const settings = { repo: `${server.owner}/${server.repo}`, apiUrl: server.url, tag: 'latest' };
  const api = new ReleaseApi(await createGitHubClient(settings, { env: { GITHUB_TOKEN: server.token }, retryBaseMs: 1 }));
  const found = await api.requireRelease('latest');
  t.deepEqual((await api.listAssets(found.id)).map((asset) => asset.name).sort(), ['a.txt', 'b.txt', 'c.txt', 'd.txt', 'e.txt'], 'pages followed');
  t.is(await api.findRelease('nope'), undefined);
  server.arm({ kind: 'status', status: 503, method: 'GET', path: '/releases/tags/latest' });
  t.is((await api.requireRelease('latest')).id, found.id, 'a 503 is retried');
  const rejected = new ReleaseApi(await createGitHubClient(settings, { env: { GITHUB_TOKEN: 'wrong' }, retryBaseMs: 1 }));
  await throwsFailure(t, rejected.requireRelease('latest'), 'auth', /rejected the token \(401\)/);
  const unreachable = new ReleaseApi(
    await createGitHubClient({ ...settings, apiUrl: 'http://127.0.0.1:9' }, { env: { GITHUB_TOKEN: server.token }, retryBaseMs: 1 }),
  );
  await throwsFailure(t, unreachable.requireRelease('latest'), 'network', /cannot reach the GitHub API at http:\/\/127\.0\.0\.1:9 \(.*ECONNREFUSED/);
});
