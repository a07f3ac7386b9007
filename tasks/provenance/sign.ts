// Signing a statement into a Sigstore bundle (a DSSE envelope), in one of two modes:
//
// - with a key, anywhere: PIPELINE_SIGNING_KEY names an ECDSA P-256 private key (PEM); the
//   bundle carries the public key's id as its verification material (hosts hold the key);
// - keyless, in GitHub Actions with `id-token: write`: the job's OIDC token buys a
//   short-lived Fulcio certificate for the workflow's identity, and the signature is
//   logged in Rekor (and timestamped, when a timestamp authority is named).
//
// The explicit key wins when both are there. Sigstore's libraries load only when signing.
import { createPrivateKey, createPublicKey, type KeyObject, sign as signBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Failure } from '../../src/index.ts';
import { apiFetch } from '../store/http/api-fetch.ts';
import { keyIdOf } from './key-id.ts';
import { IN_TOTO_PAYLOAD_TYPE, type Statement, statementBytes } from './statement.ts';

export const DEFAULT_FULCIO_URL = 'https://fulcio.sigstore.dev';
export const DEFAULT_REKOR_URL = 'https://rekor.sigstore.dev';

export type SigningMode =
  | { readonly kind: 'key'; readonly keyPath: string }
  | { readonly kind: 'keyless'; readonly tokenUrl: string; readonly requestToken: string }
  | { readonly kind: 'none' };

/** How an upload here can sign: PIPELINE_SIGNING_KEY, else GitHub Actions' OIDC token, else not at all. */
export function signingMode(env: NodeJS.ProcessEnv): SigningMode {
  const keyPath = env.PIPELINE_SIGNING_KEY?.trim();
  if (keyPath) return { kind: 'key', keyPath };
  const tokenUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL?.trim();
  const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN?.trim();
  if (tokenUrl && requestToken) return { kind: 'keyless', tokenUrl, requestToken };
  return { kind: 'none' };
}

export interface SignedStatement {
  /** The Sigstore bundle, as JSON text. */
  readonly bundle: Uint8Array;
  /** Who signed, for messages: `key 3f2a…` or the certificate's identity. */
  readonly signer: string;
  readonly keyless: boolean;
}

export async function signStatement(statement: Statement, mode: Exclude<SigningMode, { kind: 'none' }>, env: NodeJS.ProcessEnv): Promise<SignedStatement> {
  const { DSSEBundleBuilder } = await import('@sigstore/sign');
  const { bundleToJSON } = await import('@sigstore/bundle');
  const artifact = { data: statementBytes(statement), type: IN_TOTO_PAYLOAD_TYPE };
  if (mode.kind === 'key') {
    const key = await readSigningKey(mode.keyPath);
    const publicKey = createPublicKey(key);
    const hint = keyIdOf(publicKey);
    const signer = {
      sign: async (data: Buffer) => ({
        signature: signBytes('sha256', data, key),
        key: { $case: 'publicKey' as const, publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString(), hint },
      }),
    };
    const bundle = await new DSSEBundleBuilder({ signer, witnesses: [] }).create(artifact);
    return { bundle: Buffer.from(JSON.stringify(bundleToJSON(bundle))), signer: `key ${hint}`, keyless: false };
  }
  const { FulcioSigner, RekorWitness, TSAWitness } = await import('@sigstore/sign');
  const { certificateSigner, describeSigner } = await import('./bundle.ts');
  const fetchOptions = { timeout: 30_000, retry: 2 };
  const signer = new FulcioSigner({
    identityProvider: { getToken: () => actionsIdToken(mode) },
    fulcioBaseURL: env.PIPELINE_SIGSTORE_FULCIO_URL?.trim() || DEFAULT_FULCIO_URL,
    ...fetchOptions,
  });
  const tsaUrl = env.PIPELINE_SIGSTORE_TSA_URL?.trim();
  const witnesses = [
    // intoto entries: what every Rekor (and verifier) accepts for a DSSE envelope.
    new RekorWitness({ rekorBaseURL: env.PIPELINE_SIGSTORE_REKOR_URL?.trim() || DEFAULT_REKOR_URL, entryType: 'intoto', ...fetchOptions }),
    ...(tsaUrl ? [new TSAWitness({ tsaBaseURL: tsaUrl, ...fetchOptions })] : []),
  ];
  let bundle: Awaited<ReturnType<InstanceType<typeof DSSEBundleBuilder>['create']>>;
  try {
    bundle = await new DSSEBundleBuilder({ signer, witnesses }).create(artifact);
  } catch (error) {
    throw new Failure('network', `keyless signing failed: ${sigstoreMessage(error)}`, { cause: error });
  }
  const json = bundleToJSON(bundle);
  const certificate = bundle.verificationMaterial.content.$case === 'certificate' ? bundle.verificationMaterial.content.certificate.rawBytes : undefined;
  const identity = certificate ? describeSigner(await certificateSigner(certificate)) : 'a Fulcio certificate';
  const entry = bundle.verificationMaterial.tlogEntries[0];
  return {
    bundle: Buffer.from(JSON.stringify(json)),
    signer: `${identity}${entry ? ` (Rekor entry ${entry.logIndex})` : ''}`,
    keyless: true,
  };
}

/** A signing key named but unusable is a setup Failure now, not after a build. */
export async function checkSigningSetup(env: NodeJS.ProcessEnv): Promise<void> {
  const mode = signingMode(env);
  if (mode.kind === 'key') await readSigningKey(mode.keyPath);
}

/** The PEM at `path` as an ECDSA P-256 private key; anything else is a setup Failure naming the variable. */
export async function readSigningKey(path: string): Promise<KeyObject> {
  const where = `PIPELINE_SIGNING_KEY=${path}`;
  let pem: Buffer;
  try {
    pem = await readFile(path);
  } catch (error) {
    throw new Failure('setup', `${where}: cannot read it (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new Failure(
      'setup',
      `${where} is not an unencrypted PEM private key: make one with openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`,
    );
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new Failure('setup', `${where} is a ${key.asymmetricKeyType ?? 'non-EC'} key; provenance is signed with ECDSA P-256 (prime256v1) keys`);
  }
  return key;
}

/** GitHub Actions' OIDC token for the audience Fulcio expects (`sigstore`). */
async function actionsIdToken(mode: Extract<SigningMode, { kind: 'keyless' }>): Promise<string> {
  const url = new URL(mode.tokenUrl);
  url.searchParams.set('audience', 'sigstore');
  let response: Awaited<ReturnType<typeof apiFetch>>;
  try {
    response = await apiFetch(url, {
      headers: { accept: 'application/json', authorization: `bearer ${mode.requestToken}` },
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    throw new Failure('network', `cannot get the job's OIDC token from ${url.host} (${error instanceof Error ? error.message : String(error)})`);
  }
  if (!response.ok) throw new Failure('auth', `the job's OIDC token was refused (${response.status}): give the job \`permissions: id-token: write\``);
  const body = (await response.json().catch(() => undefined)) as { value?: unknown } | undefined;
  if (typeof body?.value !== 'string' || !body.value) throw new Failure('auth', `no OIDC token in the answer from ${url.host}`);
  return body.value;
}

/** Sigstore's errors nest their cause; the innermost message says what happened. */
function sigstoreMessage(error: unknown): string {
  const parts: string[] = [];
  for (let current: unknown = error; current instanceof Error && parts.length < 4; current = current.cause) parts.push(current.message);
  return parts.join(': ') || String(error);
}
