// An https front for a loopback http server (the GitHub one): TLS with a certificate made
// for the test by openssl, each request forwarded as it is, redirects to the server
// rewritten to the front, so a client talks TLS end to end. A child process trusts the
// certificate through NODE_EXTRA_CA_CERTS=`caFile`.
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TlsProxy {
  readonly url: string;
  /** The certificate's PEM file, for NODE_EXTRA_CA_CERTS. */
  readonly caFile: string;
  /** Requests that came in over TLS. */
  readonly requests: number;
  close(): Promise<void>;
}

export async function startTlsProxy(backendUrl: string): Promise<TlsProxy> {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-tls-'));
  const keyFile = join(dir, 'key.pem');
  const caFile = join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      caFile,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { stdio: 'ignore' },
  );
  const backend = new URL(backendUrl);
  let requests = 0;
  const server = https.createServer({ key: await readFile(keyFile), cert: await readFile(caFile) }, (request, response) => {
    requests++;
    const upstream = http.request(
      { host: backend.hostname, port: backend.port, method: request.method, path: request.url, headers: request.headers },
      (answer) => {
        const headers = { ...answer.headers };
        if (headers.location) headers.location = headers.location.replace(backend.origin, front);
        response.writeHead(answer.statusCode ?? 502, headers);
        answer.pipe(response);
        // The server dropped the connection mid-body (an armed reset): so does the front.
        answer.on('aborted', () => response.destroy());
        answer.on('error', () => response.destroy());
      },
    );
    upstream.on('error', () => response.destroy());
    request.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const front = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: front,
    caFile,
    get requests() {
      return requests;
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
