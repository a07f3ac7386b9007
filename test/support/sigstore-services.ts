// Sigstore on 127.0.0.1 for keyless signing with no network: a Fulcio (certificate
// authority with a CT log), a Rekor (transparency log) and a timestamp authority, from
// @sigstore/mock's implementations, served over real HTTP; a GitHub-Actions-like OIDC
// token endpoint (what ACTIONS_ID_TOKEN_REQUEST_URL names in a job); and the trusted root
// that makes a verifier trust exactly these services (the trusted_root.json a host pins).
//
// The mock's modules are loaded one by one: its index also loads nock, which patches
// node:http in the process that imports it.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fulcioHandler, initializeCA, initializeCTLog } from '@sigstore/mock/dist/fulcio/index.js';
import { initializeTLog, rekorHandler } from '@sigstore/mock/dist/rekor/index.js';
import { initializeTSA, tsaHandler } from '@sigstore/mock/dist/timestamp/index.js';
import { generateKeyPair } from '@sigstore/mock/dist/util/key.js';

export const ACTIONS_ISSUER = 'https://token.actions.githubusercontent.com';

/** The claims of a GitHub Actions job's OIDC token that Fulcio turns into certificate fields. */
export interface JobIdentity {
  /** `owner/name` */
  readonly repository: string;
  /** `.github/workflows/build.yml` */
  readonly workflow: string;
  /** `refs/heads/main`, `refs/pull/7/merge`, … */
  readonly ref: string;
  readonly runId?: string;
}

interface Handler {
  readonly path: string;
  readonly fn: (body: string) => Promise<{ statusCode: number; response: string | ArrayBufferView; contentType?: string }>;
}

/**
 * "Now" in whole seconds, for the mock timestamp authority: pkijs writes a fractional
 * second without its trailing zeros (`.25Z`), which Sigstore's parser refuses (it wants
 * three digits or none), so a tenth of real timestamps would fail for the mock's sake.
 */
function wholeSecondClock(): Date {
  return new Proxy(new Date(), {
    get(_target, property) {
      const now = new Date(Math.floor(Date.now() / 1000) * 1000);
      const value: unknown = Reflect.get(now, property);
      return typeof value === 'function' ? value.bind(now) : value;
    },
  });
}

export class SigstoreServices {
  readonly requests: string[] = [];
  private readonly tokens = new Map<string, string>();

  private constructor(
    private readonly server: http.Server,
    readonly url: string,
    private readonly root: object,
  ) {}

  static async start(): Promise<SigstoreServices> {
    const server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const ctlog = await initializeCTLog(generateKeyPair('prime256v1'));
    const ca = await initializeCA(generateKeyPair('prime256v1'), ctlog);
    const tlog = await initializeTLog(url, generateKeyPair('prime256v1'));
    const tsa = await initializeTSA(generateKeyPair('prime256v1'), wholeSecondClock());
    // Fulcio names a GitHub Actions certificate by the workflow that ran: the token's
    // job_workflow_ref under https://github.com/. The mock takes its subject from one
    // claim, so the token carries that name in a claim of its own (see token()).
    const handlers: Handler[] = [fulcioHandler(ca, { subjectClaim: 'fulcio_subject' }), rekorHandler(tlog), tsaHandler(tsa)];
    const bytes = (view: ArrayBufferView): Buffer => Buffer.from(view.buffer, view.byteOffset, view.byteLength);
    const start = new Date(Date.now() - 3_600_000).toISOString();
    const ecdsa = 'PKIX_ECDSA_P256_SHA_256';
    const root = {
      mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
      tlogs: [
        {
          baseUrl: url,
          hashAlgorithm: 'SHA2_256',
          publicKey: { rawBytes: tlog.publicKey.toString('base64'), keyDetails: ecdsa, validFor: { start } },
          logId: { keyId: createHash('sha256').update(tlog.publicKey).digest('base64') },
        },
      ],
      certificateAuthorities: [
        {
          subject: { organization: 'loopback', commonName: 'fulcio' },
          uri: url,
          certChain: { certificates: [{ rawBytes: bytes(ca.rootCertificate).toString('base64') }] },
          validFor: { start },
        },
      ],
      ctlogs: [
        {
          baseUrl: url,
          hashAlgorithm: 'SHA2_256',
          publicKey: { rawBytes: ctlog.publicKey.toString('base64'), keyDetails: ecdsa, validFor: { start } },
          logId: { keyId: bytes(ctlog.logID).toString('base64') },
        },
      ],
      timestampAuthorities: [
        {
          subject: { organization: 'loopback', commonName: 'tsa' },
          uri: url,
          certChain: {
            certificates: [{ rawBytes: bytes(tsa.intCertificate).toString('base64') }, { rawBytes: bytes(tsa.rootCertificate).toString('base64') }],
          },
          validFor: { start },
        },
      ],
    };
    const services = new SigstoreServices(server, url, root);
    server.on('request', (request, response) => {
      void services.handle(request, response, handlers);
    });
    return services;
  }

  /** Sigstore's trusted_root.json for these services. */
  trustedRootJson(): string {
    return `${JSON.stringify(this.root)}\n`;
  }

  /**
   * Environment of a GitHub Actions job running as `identity` with `id-token: write`,
   * signing through these services.
   */
  actionsEnv(identity: JobIdentity): Record<string, string> {
    const id = randomBytes(8).toString('hex');
    this.tokens.set(id, this.token(identity));
    const runId = identity.runId ?? '4242';
    return {
      GITHUB_ACTIONS: 'true',
      GITHUB_SERVER_URL: 'https://github.com',
      GITHUB_WORKFLOW_REF: `${identity.repository}/${identity.workflow}@${identity.ref}`,
      GITHUB_REPOSITORY: identity.repository,
      GITHUB_RUN_ID: runId,
      GITHUB_RUN_ATTEMPT: '1',
      GITHUB_REF: identity.ref,
      ACTIONS_ID_TOKEN_REQUEST_URL: `${this.url}/oidc/${id}?api-version=2.0`,
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: `request-token-${id}`,
      PIPELINE_SIGSTORE_FULCIO_URL: this.url,
      PIPELINE_SIGSTORE_REKOR_URL: this.url,
      PIPELINE_SIGSTORE_TSA_URL: this.url,
    };
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** An unsigned JWT with the claims a GitHub Actions job's token has (the mock Fulcio does not check signatures). */
  private token(identity: JobIdentity): string {
    const encode = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url');
    const jobWorkflowRef = `${identity.repository}/${identity.workflow}@${identity.ref}`;
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: ACTIONS_ISSUER,
      aud: 'sigstore',
      sub: `repo:${identity.repository}:ref:${identity.ref}`,
      repository: identity.repository,
      repository_owner: identity.repository.split('/')[0],
      ref: identity.ref,
      sha: '0'.repeat(40),
      workflow: identity.workflow,
      workflow_ref: jobWorkflowRef,
      job_workflow_ref: jobWorkflowRef,
      event_name: identity.ref.startsWith('refs/pull/') ? 'pull_request' : 'push',
      run_id: identity.runId ?? '4242',
      run_attempt: '1',
      runner_environment: 'self-hosted',
      fulcio_subject: `https://github.com/${jobWorkflowRef}`,
      iat: now,
      exp: now + 600,
    };
    return `${encode({ alg: 'none', typ: 'JWT' })}.${encode(claims)}.`;
  }

  private async handle(request: http.IncomingMessage, response: http.ServerResponse, handlers: readonly Handler[]): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const url = new URL(request.url ?? '/', this.url);
    this.requests.push(`${request.method} ${url.pathname}`);
    const oidc = /^\/oidc\/([0-9a-f]+)$/.exec(url.pathname);
    if (oidc) {
      const token = this.tokens.get(oidc[1]!);
      const authorised = request.headers.authorization?.toLowerCase() === `bearer request-token-${oidc[1]}`;
      if (!token || !authorised || url.searchParams.get('audience') !== 'sigstore') {
        response.writeHead(401, { 'content-type': 'application/json' }).end('{"message":"bad request token"}');
        return;
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ value: token }));
      return;
    }
    const handler = handlers.find((candidate) => candidate.path === url.pathname);
    if (!handler || request.method !== 'POST') {
      response.writeHead(404).end();
      return;
    }
    const result = await handler.fn(Buffer.concat(chunks).toString('utf8'));
    const body =
      typeof result.response === 'string' ? result.response : Buffer.from(result.response.buffer, result.response.byteOffset, result.response.byteLength);
    response.writeHead(result.statusCode, { 'content-type': result.contentType ?? 'text/plain' }).end(body);
  }
}
