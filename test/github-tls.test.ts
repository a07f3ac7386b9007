// `images download` over TLS, as from github.com: the real CLI against the loopback GitHub
// behind an https front. The API answers and the bytes both come over TLS; a paused TLS
// socket hands over the records it had already decrypted, and none of them may be lost,
// reordered or overwritten while the download file still holds them; a reset mid-body is
// resumed over TLS; the storage redirect never sees the token.
import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { GitHubServer } from './support/github-server.ts';
import { makeImageProject, randomQcow2 } from './support/image-project.ts';
import { startTlsProxy } from './support/tls-proxy.ts';

test('images download over TLS: parts in parallel, a reset resumed, the bytes verified and whole', async (t) => {
  const server = await GitHubServer.start();
  t.teardown(() => server.close());
  const proxy = await startTlsProxy(server.url);
  t.teardown(() => proxy.close());
  const project = await makeImageProject(t);

  // About 12 MiB in three parts: many write buffers a part, so the sockets pause and resume
  // often. A real qcow2, since images download installs only self-contained ones.
  const bytes = randomQcow2(project.path('source/debian-12.qcow2'), 12 * 1024 * 1024);
  const partBytes = Math.ceil(bytes.length / 3);
  server.createRelease('latest');
  for (const [index, suffix] of ['aa', 'ab', 'ac'].entries()) {
    await server.putAsset('latest', `debian-12.qcow2.part${suffix}`, bytes.subarray(index * partBytes, (index + 1) * partBytes));
  }
  await server.putAsset('latest', 'debian-12.qcow2.sha256', Buffer.from(`${createHash('sha256').update(bytes).digest('hex')}  debian-12.qcow2\n`));
  const partab = server.assets('latest').find((asset) => asset.name === 'debian-12.qcow2.partab')!;
  server.arm({ kind: 'reset', path: `/storage/${partab.id}/`, afterBytes: 1_500_000 });

  const dir = project.path('downloads');
  const result = await project.run(['images', 'download', 'debian-12', '--dir', dir], {
    env: {
      GITHUB_TOKEN: server.token,
      GITHUB_API_URL: proxy.url,
      GITHUB_REPOSITORY: `${server.owner}/${server.repo}`,
      GH_TOKEN: undefined,
      NODE_EXTRA_CA_CERTS: proxy.caFile,
    },
  });
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /debian-12: downloaded, checksum verified/);
  t.true((await readFile(`${dir}/debian-12.qcow2`)).equals(bytes), 'the image, byte for byte');
  t.is(server.pendingFaults, 0, 'the reset happened');
  const storage = server.requests.filter((request) => request.path.startsWith('/storage/'));
  t.true(
    storage.some((request) => request.range !== undefined),
    'the reset part resumed with a Range request',
  );
  t.true(
    storage.every((request) => request.authorization === undefined),
    'storage never sees the token',
  );
  t.true(proxy.requests >= server.requests.length, 'every request came over TLS');
  t.false(result.stdout.includes(server.token) || result.stderr.includes(server.token));
});

test('a TLS body reaches a sink that holds every chunk for a while: every byte, in order, unchanged', async (t) => {
  const body = randomBytes(8 * 1024 * 1024);
  const origin = http.createServer((_request, response) => {
    response.writeHead(200, { 'content-length': String(body.length) });
    response.end(body);
  });
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => origin.close(() => resolve())));
  const proxy = await startTlsProxy(`http://127.0.0.1:${(origin.address() as AddressInfo).port}`);
  t.teardown(() => proxy.close());
  // In a child, which trusts the test's certificate. The sink reads each chunk only when
  // its hold ends, as the download file does when it waits for a write.
  const script = `
    import { createHash, randomBytes } from 'node:crypto';
    import { httpGet } from ${JSON.stringify(fileURLToPath(new URL('../tasks/store/http/http-get.ts', import.meta.url)))};
    const hash = createHash('sha256');
    const result = await httpGet({
      url: new URL(process.env.URL), headers: {}, signal: AbortSignal.timeout(60_000),
      onResponse: () => (chunk) => new Promise((resolve) => setTimeout(resolve, 1)).then(() => void hash.update(chunk)),
    });
    console.log(JSON.stringify({ status: result.status, received: result.received, complete: result.complete, sha256: hash.digest('hex') }));
  `;
  const output = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { env: { ...process.env, URL: `${proxy.url}/body`, NODE_EXTRA_CA_CERTS: proxy.caFile } },
      (error, stdout, stderr) => (error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
  t.deepEqual(JSON.parse(output), { status: 200, received: body.length, complete: true, sha256: createHash('sha256').update(body).digest('hex') });
});
