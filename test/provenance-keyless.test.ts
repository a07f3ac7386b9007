// Keyless provenance end to end with no network: the origin uploads as a GitHub Actions
// job would (an OIDC token for acme/images' build workflow on main), signing through a
// Fulcio, a Rekor and a timestamp authority on 127.0.0.1 and writing each bundle to the
// loopback GitHub's attestations API; hosts that trust that workflow (`release.trust.github`)
// under a pinned trusted root made from those services verify on download, `--publish` and
// the remote cache. Bundles from the same Sigstore for another workflow, another
// repository or a pull request's ref are refused by both.
import test from 'ava';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { signingMode, signStatement } from '../tasks/provenance/sign.ts';
import { GitHubServer } from './support/github-server.ts';
import {
  explain,
  freshHost,
  imageFrom,
  NEUTRAL_ENV,
  RELEASE_MARKER,
  refusedEverywhere,
  sha256,
  StoreHand,
  statementOf,
  withRelease,
} from './support/provenance-world.ts';
import type { CliResult } from './support/engine-project.ts';
import { Trees, type Tree } from './support/runner-trees.ts';
import { seededRandom } from './support/seeded-random.ts';
import { type JobIdentity, SigstoreServices } from './support/sigstore-services.ts';

const trees = new Trees();
const cleanups: Array<() => Promise<unknown>> = [];
test.after.always(async () => {
  await trees.cleanup();
  await Promise.all(cleanups.map((cleanup) => cleanup()));
});

const WORKFLOW = '.github/workflows/build.yml';
const TRUSTED: JobIdentity = { repository: 'acme/images', workflow: WORKFLOW, ref: 'refs/heads/main' };
const SIGNER = `https://github.com/acme/images/${WORKFLOW}@refs/heads/main`;

interface World {
  readonly services: SigstoreServices;
  readonly github: GitHubServer;
  readonly release: object;
  readonly origin: Tree;
  readonly env: Record<string, string | undefined>;
  readonly upload: CliResult;
}

let world: Promise<World> | undefined;

/** The origin built and uploaded by a GitHub Actions job of the trusted workflow, signing keyless; shared by the file's tests. */
function setUp(): Promise<World> {
  return (world ??= (async () => {
    const services = await SigstoreServices.start();
    const github = await GitHubServer.start();
    cleanups.push(
      () => services.close(),
      () => github.close(),
    );
    const release = {
      repo: `${github.owner}/${github.repo}`,
      apiUrl: github.url,
      tag: 'latest',
      maxAssetSize: 200 * 1024,
      partSize: 150 * 1024,
      trust: { github: { repo: 'acme/images', workflow: WORKFLOW, ref: 'refs/heads/main' }, trustedRoot: 'keys/trusted_root.json' },
    };
    const origin = await withRelease(trees, await trees.built(RELEASE_MARKER), 'keyless-origin', release);
    await mkdir(origin.path('keys'), { recursive: true });
    await writeFile(origin.path('keys/trusted_root.json'), services.trustedRootJson());
    const env = { ...NEUTRAL_ENV, GITHUB_TOKEN: github.token };
    const job = { ...env, ...services.actionsEnv(TRUSTED), GITHUB_API_URL: github.url };
    const upload = await origin.run(['upload:latest'], { env: job, timeoutMs: 240_000 });
    return { services, github, release, origin, env, upload };
  })());
}

test.serial(
  'keyless, no network: a GitHub Actions job signs each image on upload (Fulcio, Rekor, a timestamp) and writes it to the attestations API',
  async (t) => {
    const { services, github, origin, env, upload } = await setUp();
    t.is(upload.code, 0, explain(upload));
    for (const name of ['debian-12', 'debian-13', 'pve-9']) {
      const signed = `${name}:upload: provenance: signed ${name}'s statement keyless as ${SIGNER.replaceAll('.', '\\.')} \\(Rekor entry \\d+\\)`;
      t.regex(upload.stdout + upload.stderr, new RegExp(signed));
    }
    t.is(github.attestations.length, 3, 'each bundle is written to the attestations API');
    t.like(github.attestations[0], { mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json' });
    for (const request of ['POST /api/v2/signingCert', 'POST /api/v1/log/entries', 'POST /api/v1/timestamp'])
      t.true(services.requests.includes(request), request);
    const check = await origin.run(['release', 'check', '--json'], { env });
    for (const verdict of JSON.parse(check.stdout).images as Array<{ name: string; signer: unknown }>) {
      t.deepEqual(verdict.signer, { kind: 'keyless', id: SIGNER, verified: true }, verdict.name);
    }
  },
);

test.serial('keyless: a host trusting the workflow under the pinned root verifies on download, --publish and the remote cache', async (t) => {
  const { origin, env } = await setUp();
  const host = await freshHost(trees, origin, 'keyless-host');
  const download = await host.run(['images', 'download', 'debian-12', '--publish', '--dir', host.path('downloads')], { env });
  t.is(download.code, 0, explain(download));
  t.regex(download.stderr, new RegExp(`^debian-12: provenance verified: signed by ${SIGNER.replaceAll('.', '\\.')}$`, 'm'));
  t.is(sha256(await readFile(host.path('publish/debian-12.img'))), sha256(await readFile(origin.path('images/debian-12/debian-12.qcow2'))));
  t.true(existsSync(host.path('downloads/debian-12.qcow2.sigstore.json')));
  const cache = await host.run(['pve-9:publish'], { env });
  t.is(cache.code, 0, explain(cache));
  t.regex(cache.stdout + cache.stderr, /▶ pve-9:build \(would fetch from/);
  t.notRegex(cache.stdout + cache.stderr, /refused|here instead/);
  const verify = await host.run(['verify', 'pve-9'], { env });
  t.is(verify.code, 0, explain(verify));
});

test.serial(
  'keyless: bundles from the same Sigstore for another workflow, repository or a pull request ref are refused by download and the remote cache',
  async (t) => {
    const { services, release, origin, env } = await setUp();
    const hand = new StoreHand(release, { env, tuning: { retryBaseMs: 2 } });
    const original = await imageFrom(origin, 'debian-12', await hand.record('debian-12'));
    const originalBundle = await hand.bundle('debian-12');
    const cases: Array<{ label: string; identity: JobIdentity; reason: RegExp }> = [
      {
        label: 'another workflow',
        identity: { ...TRUSTED, workflow: '.github/workflows/other.yml' },
        reason:
          /its provenance is signed keyless by https:\/\/github\.com\/acme\/images\/\.github\/workflows\/other\.yml@refs\/heads\/main; release\.trust\.github trusts/,
      },
      {
        label: 'another repository',
        identity: { ...TRUSTED, repository: 'mallory/images' },
        reason:
          /its provenance is signed keyless by https:\/\/github\.com\/mallory\/images\/\.github\/workflows\/build\.yml@refs\/heads\/main; release\.trust\.github trusts/,
      },
      {
        label: 'a pull request ref',
        identity: { ...TRUSTED, ref: 'refs/pull/7/merge' },
        reason:
          /its provenance is signed keyless by https:\/\/github\.com\/acme\/images\/\.github\/workflows\/build\.yml@refs\/pull\/7\/merge; release\.trust\.github trusts/,
      },
    ];
    const seed = Number(process.env.PROVENANCE_MATRIX_SEED ?? Date.now() % 1_000_000);
    const chosen = process.env.PROVENANCE_MATRIX === 'full' ? cases : [cases[Math.floor(seededRandom(seed)() * cases.length)]!];
    t.log(`cases: ${chosen.map((tamper) => tamper.label).join(', ')} (seed ${seed}; replay: PROVENANCE_MATRIX_SEED=${seed}; all: PROVENANCE_MATRIX=full)`);
    for (const tamper of chosen) {
      const signer = services.actionsEnv(tamper.identity);
      const mode = signingMode(signer);
      if (mode.kind !== 'keyless') return t.fail('no keyless signing mode');
      const bundle = (await signStatement(statementOf(original), mode, signer)).bundle;
      await hand.put(original, bundle);
      await refusedEverywhere(t, trees, origin, env, tamper.label, tamper.reason);
    }
    await hand.put(original, originalBundle);
  },
);
