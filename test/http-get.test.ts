// The HTTP layer's kept-alive connections, for requests that ask for them: GETs to one
// origin, one after another, share a connection; one the server closed while idle is
// replaced without the caller noticing; an answer that says `Connection: close`, or that
// sends more than its body, is never followed by another request on its connection.
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { getFollowingRedirects, httpGet } from '../tasks/store/http/http-get.ts';

interface Served {
  readonly url: string;
  /** Connections the server accepted. */
  readonly connections: () => number;
  /** Closes the connections that carry no request now, as a server does once they have been idle a while. */
  closeIdle(): void;
  close(): Promise<void>;
}

async function serve(handler: http.RequestListener): Promise<Served> {
  const server = http.createServer(handler);
  server.keepAliveTimeout = 60_000;
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => connections,
    closeIdle: () => server.closeIdleConnections(),
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A server that speaks raw bytes: `answer(connection, request)` says what to do with each
 * request head that arrives (the connection's number from 1, the request's on it from 1).
 */
async function rawServer(
  t: ExecutionContext,
  answer: (socket: net.Socket, connection: number, request: number) => void,
): Promise<{ url: string; connections: () => number }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const connection = ++connections;
    let requests = 0;
    sockets.add(socket);
    socket.on('data', (data) => {
      if (data.includes('\r\n\r\n')) answer(socket, connection, ++requests);
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, connections: () => connections };
}

/** GETs `url` and returns the body. */
async function get(url: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const result = await httpGet({
    url: new URL(url),
    headers: {},
    keepAlive: true,
    signal: new AbortController().signal,
    onResponse: () => (chunk) => void chunks.push(Buffer.from(chunk)),
  });
  if (!result.complete) throw new Error('incomplete body');
  return Buffer.concat(chunks);
}

test('GETs to one origin, one after another, share one connection, sized or chunked', async (t) => {
  const body = randomBytes(300_000);
  const server = await serve((request, response) => {
    if (request.url === '/chunked') {
      response.write(body.subarray(0, 1000));
      response.end(body.subarray(1000));
    } else {
      response.writeHead(200, { 'content-length': String(body.length) });
      response.end(body);
    }
  });
  t.teardown(() => server.close());
  for (const path of ['/sized', '/chunked', '/sized', '/chunked']) t.true((await get(`${server.url}${path}`)).equals(body), path);
  t.is(server.connections(), 1);
});

test('without keepAlive, each GET has a connection of its own and says Connection: close', async (t) => {
  const said: Array<string | undefined> = [];
  const server = await serve((request, response) => {
    said.push(request.headers.connection);
    response.end('ok');
  });
  t.teardown(() => server.close());
  for (let round = 0; round < 3; round++) {
    await httpGet({ url: new URL(server.url), headers: {}, signal: new AbortController().signal, onResponse: () => () => {} });
  }
  t.is(server.connections(), 3);
  t.deepEqual(said, ['close', 'close', 'close']);
});

test('a redirect with an empty body leaves its connection for the GET it leads to', async (t) => {
  const server = await serve((request, response) => {
    if (request.url === '/asset') {
      response.writeHead(302, { location: '/storage/asset', 'content-length': '0' });
      response.end();
    } else {
      response.end('bytes');
    }
  });
  t.teardown(() => server.close());
  let body = '';
  const result = await getFollowingRedirects({
    url: new URL(`${server.url}/asset`),
    headers: {},
    keepAlive: true,
    signal: new AbortController().signal,
    onResponse: () => (chunk) => void (body += chunk.toString()),
  });
  t.is(result.status, 200);
  t.is(body, 'bytes');
  t.is(server.connections(), 1);
});

test('a connection the server closed while it was idle is not used again', async (t) => {
  const server = await serve((_request, response) => response.end('ok'));
  t.teardown(() => server.close());
  t.is((await get(server.url)).toString(), 'ok');
  server.closeIdle();
  await sleep(200);
  t.is((await get(server.url)).toString(), 'ok');
  t.is(server.connections(), 2);
});

test('a connection reset as a kept-alive GET goes out on it is replaced, and the GET answered', async (t) => {
  // The first connection answers once, then resets when the second request arrives.
  const server = await rawServer(t, (socket, connection, request) => {
    if (connection === 1 && request === 2) socket.resetAndDestroy();
    else socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  });
  t.is((await get(server.url)).toString(), 'ok');
  t.is((await get(server.url)).toString(), 'ok');
  t.is(server.connections(), 2);
});

test('an answer that says Connection: close, or sends bytes past its body, is the last on its connection', async (t) => {
  const server = await serve((request, response) => {
    if (request.url === '/close') response.setHeader('connection', 'close');
    response.end('ok');
  });
  t.teardown(() => server.close());
  await get(`${server.url}/close`);
  await get(`${server.url}/close`);
  t.is(server.connections(), 2, 'Connection: close');

  // Answers that carry two bytes more than their Content-Length.
  const raw = await rawServer(t, (socket) => socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokXX'));
  t.is((await get(raw.url)).toString(), 'ok');
  t.is((await get(raw.url)).toString(), 'ok');
  t.is(raw.connections(), 2, 'bytes past the body');
});

test('an idle connection does not keep the process alive', async (t) => {
  const server = await serve((_request, response) => response.end('ok'));
  t.teardown(() => server.close());
  const { execFile } = await import('node:child_process');
  // The child says how long after its GET it exits: at once, not after the 2 s an idle connection waits for a next GET.
  const script = `
    import { httpGet } from ${JSON.stringify(new URL('../tasks/store/http/http-get.ts', import.meta.url).href)};
    await httpGet({ url: new URL(${JSON.stringify(server.url)}), headers: {}, keepAlive: true, signal: new AbortController().signal, onResponse: () => () => {} });
    const done = performance.now();
    process.on('exit', () => console.log(Math.round(performance.now() - done)));
  `;
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { timeout: 30_000 }, (error, out) =>
      error ? reject(error) : resolve(out),
    ),
  );
  t.true(Number(stdout.trim()) < 1500, `exited ${stdout.trim()} ms after the GET`);
  t.is(server.connections(), 1);
});
