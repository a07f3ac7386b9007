// Provenance in process: the statement holds every fact of the record it is made from, and
// any one fact changed is named; key-signed and keyless bundles (keyless against Sigstore
// services on 127.0.0.1) verify for the trusted signer and are refused, each with its
// reason, for an untrusted key, another workflow, repository or ref, a damaged envelope
// or a truncated bundle.
import test from 'ava';
import fc from 'fast-check';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installedPlugins, requiredPluginSources, runFacts } from '../tasks/provenance/build-facts.ts';
import { parseBundle } from '../tasks/provenance/bundle.ts';
import { imageStatement } from '../tasks/provenance/image-statement.ts';
import { signingMode, signStatement } from '../tasks/provenance/sign.ts';
import { inputsDisagreement, statedInputs } from '../tasks/provenance/statement.ts';
import { loadTrust, type TrustSettings } from '../tasks/provenance/trust.ts';
import { verifyProvenance } from '../tasks/provenance/verify.ts';
import { recordOf, type ImageRecord } from '../tasks/store/record.ts';
import type { ImageToPut } from '../tasks/store/store.ts';
import { SigstoreServices } from './support/sigstore-services.ts';

const hex = (length: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${length}}$`));

const image: ImageToPut = {
  name: 'pve-9',
  path: '/nonexistent/pve-9.qcow2',
  size: 1234,
  sha256: 'a'.repeat(64),
  cacheKey: 'b'.repeat(64),
  compression: 'zstd',
  versions: { DEBIAN_VERSION: '13.3', PVE_VERSION: '9.1' },
  sources: {
    base: { path: 'cache/debian-13-generic-amd64.qcow2', sha256: 'c'.repeat(64), sha512: 'd'.repeat(128) },
    files: { 'templates/pve-9/template.pkr.hcl': 'e'.repeat(64), 'shared/scripts/cleanup-common.sh': 'f'.repeat(64) },
  },
};
const settings = {
  baseUrl: 'https://cloud.debian.org/images/cloud/trixie/latest/debian-13-generic-amd64.qcow2',
  template: 'templates/pve-9/template.pkr.hcl',
  accelerator: 'kvm',
};
const record = recordOf(image, [{ name: 'pve-9.qcow2', size: 1234 }], '2025-01-01T00:00:00Z');

const cleanups: Array<() => Promise<unknown>> = [];
test.after.always(() => Promise.all(cleanups.map((cleanup) => cleanup())));

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pipeline-provenance-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A P-256 key pair written as PEM files: the private key to sign with, the public one to trust. */
async function keyPair(dir: string, label: string): Promise<{ privatePath: string; publicPath: string }> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const privatePath = join(dir, `${label}.pem`);
  const publicPath = join(dir, `${label}.pub`);
  await writeFile(privatePath, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  await writeFile(publicPath, publicKey.export({ type: 'spki', format: 'pem' }));
  return { privatePath, publicPath };
}

test('the statement states every fact of the record it is made from, and names any one changed', (t) => {
  const statement = imageStatement(image, settings, undefined, {});
  t.is(inputsDisagreement(statement, 'pve-9', record), undefined);
  t.is(statement.subject[0]!.name, 'pve-9.qcow2');
  t.deepEqual(statement.subject[0]!.digest, { sha256: image.sha256 });
  t.is(statement.predicate.buildDefinition.internalParameters?.accelerator, 'kvm');
  const base = statement.predicate.buildDefinition.resolvedDependencies?.find((dependency) => dependency.name === 'base-image');
  t.deepEqual(base?.digest, { sha512: 'd'.repeat(128), sha256: 'c'.repeat(64) });
  t.is(base?.uri, settings.baseUrl);

  const seed = Number(process.env.PROVENANCE_SEED ?? Date.now() % 1_000_000);
  t.log(`seed ${seed} (replay: PROVENANCE_SEED=${seed})`);
  const mutation = fc.oneof(
    hex(64).map(
      (sha256) =>
        (r: ImageRecord): ImageRecord => ({ ...r, sha256 }),
    ),
    hex(64).map(
      (cacheKey) =>
        (r: ImageRecord): ImageRecord => ({ ...r, cacheKey }),
    ),
    fc.constantFrom('zlib' as const, 'none' as const).map(
      (compression) =>
        (r: ImageRecord): ImageRecord => ({ ...r, compression }),
    ),
    fc.string({ minLength: 1, maxLength: 8 }).map(
      (value) =>
        (r: ImageRecord): ImageRecord => ({ ...r, versions: { ...r.versions, DEBIAN_VERSION: `x${value}` } }),
    ),
    hex(64).map(
      (sha256) =>
        (r: ImageRecord): ImageRecord => ({ ...r, sources: { ...r.sources!, base: { ...r.sources!.base, sha256 } } }),
    ),
    hex(128).map(
      (sha512) =>
        (r: ImageRecord): ImageRecord => ({ ...r, sources: { ...r.sources!, base: { ...r.sources!.base, sha512 } } }),
    ),
    fc.stringMatching(/^cache\/[a-z0-9-]{1,12}\.qcow2$/).map(
      (path) =>
        (r: ImageRecord): ImageRecord => ({ ...r, sources: { ...r.sources!, base: { ...r.sources!.base, path } } }),
    ),
    fc.tuple(fc.constantFrom(...Object.keys(image.sources.files)), hex(64)).map(
      ([path, sha]) =>
        (r: ImageRecord): ImageRecord => ({ ...r, sources: { ...r.sources!, files: { ...r.sources!.files, [path]: sha } } }),
    ),
    fc.stringMatching(/^shared\/[a-z]{1,8}\.sh$/).map(
      (path) =>
        (r: ImageRecord): ImageRecord => ({ ...r, sources: { ...r.sources!, files: { ...r.sources!.files, [path]: '0'.repeat(64) } } }),
    ),
    fc.constantFrom(...Object.keys(image.sources.files)).map((path) => (r: ImageRecord): ImageRecord => {
      const { [path]: _dropped, ...files } = r.sources!.files;
      return { ...r, sources: { ...r.sources!, files } };
    }),
  );
  fc.assert(
    fc.property(mutation, (mutate) => {
      const changed = mutate(record);
      if (JSON.stringify(changed) === JSON.stringify(record)) return true;
      return typeof inputsDisagreement(statement, 'pve-9', changed) === 'string';
    }),
    { seed, numRuns: 500 },
  );
  t.regex(inputsDisagreement(statement, 'debian-13', record) ?? '', /provenance of pve-9\.qcow2, not debian-13\.qcow2/);
  t.deepEqual(statedInputs(statement).files, image.sources.files);
});

test('run facts name the GitHub Actions workflow and run attempt in Actions, the host elsewhere', (t) => {
  const actions = runFacts({
    GITHUB_ACTIONS: 'true',
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_WORKFLOW_REF: 'acme/images/.github/workflows/build.yml@refs/heads/main',
    GITHUB_REPOSITORY: 'acme/images',
    GITHUB_RUN_ID: '99',
    GITHUB_RUN_ATTEMPT: '2',
  });
  t.is(actions.builder, 'https://github.com/acme/images/.github/workflows/build.yml@refs/heads/main');
  t.is(actions.invocation, 'https://github.com/acme/images/actions/runs/99/attempts/2');
  t.regex(runFacts({}).builder, /^urn:pipeline:host:/);
});

test('packer plugins: the sources a template requires, at the highest installed version', (t) => {
  const template =
    'packer {\n  required_plugins {\n    qemu = {\n      source  = "github.com/hashicorp/qemu"\n      version = ">= 1.0.0"\n    }\n  }\n}\nsource "qemu" "x" {\n}\n';
  t.deepEqual(requiredPluginSources(template), ['github.com/hashicorp/qemu']);
  const listing = [
    '/root/.config/packer/plugins/github.com/hashicorp/qemu/packer-plugin-qemu_v1.0.9_x5.0_linux_amd64',
    '/root/.config/packer/plugins/github.com/hashicorp/qemu/packer-plugin-qemu_v1.1.0_x5.0_linux_amd64',
    '/root/.config/packer/plugins/github.com/hashicorp/ansible/packer-plugin-ansible_v1.1.1_x5.0_linux_amd64',
  ].join('\n');
  t.deepEqual(installedPlugins(listing, ['github.com/hashicorp/qemu']), [{ source: 'github.com/hashicorp/qemu', version: '1.1.0' }]);
});

test('a key-signed bundle verifies for its key only; a damaged or truncated one is refused with its reason', async (t) => {
  const dir = await tempDir();
  const signing = await keyPair(dir, 'signing');
  const other = await keyPair(dir, 'other');
  const statement = imageStatement(image, settings, undefined, {});
  const mode = signingMode({
    PIPELINE_SIGNING_KEY: signing.privatePath,
    ACTIONS_ID_TOKEN_REQUEST_URL: 'http://127.0.0.1:9/x',
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: 't',
  });
  t.is(mode.kind, 'key', 'an explicit key wins over the OIDC token');
  if (mode.kind !== 'key') return;
  const signed = await signStatement(statement, mode, {});
  t.false(signed.keyless);
  t.regex(signed.signer, /^key [0-9a-f]{64}$/);

  const trusted = await loadTrust({ keys: [signing.publicPath] }, { root: dir, env: {} });
  const verdict = await verifyProvenance(trusted, 'pve-9', record, signed.bundle);
  t.true(verdict.trusted, verdict.trusted ? '' : verdict.reason);

  const untrusted = await loadTrust({ keys: [other.publicPath] }, { root: dir, env: {} });
  const refused = await verifyProvenance(untrusted, 'pve-9', record, signed.bundle);
  t.false(refused.trusted);
  if (!refused.trusted) t.regex(refused.reason, /signed by key [0-9a-f]{12}, which release\.trust\.keys does not name/);

  t.like(await verifyProvenance(trusted, 'pve-9', record, undefined), { trusted: false, reason: 'it has no signed provenance' });
  const truncated = await verifyProvenance(trusted, 'pve-9', record, signed.bundle.subarray(0, signed.bundle.length - 40));
  t.like(truncated, { trusted: false, reason: 'its provenance bundle is not JSON (truncated or damaged)' });

  // The same envelope with another statement in it: the signature no longer holds.
  const json = JSON.parse(Buffer.from(signed.bundle).toString('utf8'));
  const otherStatement = imageStatement({ ...image, sha256: '9'.repeat(64) }, settings, undefined, {});
  json.dsseEnvelope.payload = Buffer.from(JSON.stringify(otherStatement)).toString('base64');
  const forged = await verifyProvenance(trusted, 'pve-9', { ...record, sha256: '9'.repeat(64) }, Buffer.from(JSON.stringify(json)));
  t.false(forged.trusted);
  if (!forged.trusted) t.regex(forged.reason, /does not verify \(SIGNATURE_ERROR/);

  const otherRecord = { ...record, sha256: '9'.repeat(64) };
  const wrongBytes = await verifyProvenance(trusted, 'pve-9', otherRecord, signed.bundle);
  t.false(wrongBytes.trusted);
  if (!wrongBytes.trusted) t.regex(wrongBytes.reason, /signed for other bytes/);
});

test('a signing key that is not ECDSA P-256 is refused in one line naming the variable', async (t) => {
  const dir = await tempDir();
  const { privateKey } = generateKeyPairSync('ed25519');
  const path = join(dir, 'ed.pem');
  await writeFile(path, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const statement = imageStatement(image, settings, undefined, {});
  const error = await t.throwsAsync(signStatement(statement, { kind: 'key', keyPath: path }, {}));
  t.regex(error.message, /^PIPELINE_SIGNING_KEY=.*ed\.pem is a ed25519 key; provenance is signed with ECDSA P-256/);
  const missing = await t.throwsAsync(signStatement(statement, { kind: 'key', keyPath: join(dir, 'nope.pem') }, {}));
  t.regex(missing.message, /PIPELINE_SIGNING_KEY=.*nope\.pem: cannot read it \(ENOENT\)/);
});

test('keyless: a bundle from a GitHub Actions job (Fulcio, Rekor and a timestamp on 127.0.0.1) verifies for that workflow only', async (t) => {
  const services = await SigstoreServices.start();
  cleanups.push(() => services.close());
  const dir = await tempDir();
  await writeFile(join(dir, 'trusted_root.json'), services.trustedRootJson());
  const job = { repository: 'acme/images', workflow: '.github/workflows/build.yml', ref: 'refs/heads/main' };
  const env = services.actionsEnv(job);
  const mode = signingMode(env);
  t.is(mode.kind, 'keyless');
  if (mode.kind !== 'keyless') return;
  const statement = imageStatement(image, settings, undefined, env);
  t.is(statement.predicate.runDetails.builder.id, 'https://github.com/acme/images/.github/workflows/build.yml@refs/heads/main');
  const signed = await signStatement(statement, mode, env);
  t.true(signed.keyless);
  t.regex(signed.signer, /^https:\/\/github\.com\/acme\/images\/\.github\/workflows\/build\.yml@refs\/heads\/main \(Rekor entry \d+\)$/);
  t.true(services.requests.includes('POST /api/v2/signingCert'));
  t.true(services.requests.includes('POST /api/v1/log/entries'));
  t.true(services.requests.includes('POST /api/v1/timestamp'));

  const parsed = await parseBundle(signed.bundle);
  t.not(typeof parsed, 'string');

  const trustFor = (github: TrustSettings['github']) => loadTrust({ github, trustedRoot: 'trusted_root.json' }, { root: dir, env: {} });
  const good = await verifyProvenance(
    await trustFor({ repo: 'acme/images', workflow: '.github/workflows/build.yml', ref: 'refs/heads/main' }),
    'pve-9',
    record,
    signed.bundle,
  );
  t.true(good.trusted, good.trusted ? '' : good.reason);

  const cases: Array<[TrustSettings['github'], RegExp]> = [
    [
      { repo: 'acme/images', workflow: '.github/workflows/other.yml', ref: 'refs/heads/main' },
      /trusts https:\/\/github\.com\/acme\/images\/\.github\/workflows\/other\.yml@refs\/heads\/main/,
    ],
    [{ repo: 'evil/images', workflow: '.github/workflows/build.yml', ref: 'refs/heads/main' }, /trusts https:\/\/github\.com\/evil\/images\//],
    [{ repo: 'acme/images', workflow: '.github/workflows/build.yml', ref: 'refs/heads/release' }, /@refs\/heads\/release/],
  ];
  for (const [github, reason] of cases) {
    const verdict = await verifyProvenance(await trustFor(github), 'pve-9', record, signed.bundle);
    t.false(verdict.trusted, JSON.stringify(github));
    if (!verdict.trusted) t.regex(verdict.reason, reason);
  }

  // Trusting keys only: a keyless bundle has no trusted signer.
  const keysDir = await keyPair(dir, 'k');
  const keysOnly = await verifyProvenance(await loadTrust({ keys: [keysDir.publicPath] }, { root: dir, env: {} }), 'pve-9', record, signed.bundle);
  t.false(keysOnly.trusted);
  if (!keysOnly.trusted) t.regex(keysOnly.reason, /signed keyless by https:\/\/github\.com\/acme\/images\/.*, and release\.trust names no GitHub workflow/);

  // Another Sigstore (a trusted root that is not these services') does not vouch for the certificate.
  const stranger = await SigstoreServices.start();
  cleanups.push(() => stranger.close());
  await writeFile(join(dir, 'stranger_root.json'), stranger.trustedRootJson());
  const foreign = await verifyProvenance(
    await loadTrust(
      { github: { repo: 'acme/images', workflow: '.github/workflows/build.yml', ref: 'refs/heads/main' }, trustedRoot: 'stranger_root.json' },
      { root: dir, env: {} },
    ),
    'pve-9',
    record,
    signed.bundle,
  );
  t.false(foreign.trusted);
  if (!foreign.trusted) t.regex(foreign.reason, /does not verify/);
});

test('a pull request run is refused by a trust naming the branch', async (t) => {
  const services = await SigstoreServices.start();
  cleanups.push(() => services.close());
  const dir = await tempDir();
  await writeFile(join(dir, 'trusted_root.json'), services.trustedRootJson());
  const env = services.actionsEnv({ repository: 'acme/images', workflow: '.github/workflows/build.yml', ref: 'refs/pull/7/merge' });
  const mode = signingMode(env);
  if (mode.kind !== 'keyless') return t.fail('no keyless mode');
  const signed = await signStatement(imageStatement(image, settings, undefined, env), mode, env);
  const trust = await loadTrust(
    { github: { repo: 'acme/images', workflow: '.github/workflows/build.yml', ref: 'refs/heads/main' }, trustedRoot: 'trusted_root.json' },
    { root: dir, env: {} },
  );
  const verdict = await verifyProvenance(trust, 'pve-9', record, signed.bundle);
  t.false(verdict.trusted);
  if (!verdict.trusted)
    t.regex(
      verdict.reason,
      /build\.yml@refs\/pull\/7\/merge; release\.trust\.github trusts https:\/\/github\.com\/acme\/images\/\.github\/workflows\/build\.yml@refs\/heads\/main/,
    );
});
