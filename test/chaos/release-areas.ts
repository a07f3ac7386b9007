// Chaos areas "upload" and "download", against the loopback GitHub server with small
// part sizes, so every image is uploaded in parts. "upload": `pipeline upload:latest`
// killed at a random moment after an image changed; "download": `images download all
// --publish` killed at a random moment. After each kill: what the tool takes as fresh (an
// upload node a dry run calls fresh, a downloaded or published file under its final name)
// must be correct; a re-run completes; the release is consistent and holds the current
// images; nothing is left over, and the token is nowhere on disk.
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Project } from '../support/engine-project.ts';
import { GitHubServer } from '../support/github-server.ts';
import { IMAGES, makeImageProject, type ImageProject } from '../support/image-project.ts';
import { imageVersion, releaseProblems, type ImageVersion } from '../support/release-state.ts';
import { MARK_VARIABLE, newMark, walk } from '../support/chaos.ts';
import { debrisProblems, digest, type AreaOptions } from './build-area.ts';
import { runAndInterrupt, sigintProblems, type Interrupted, type KillSignal, type TrialReport } from './harness.ts';

const TAG = 'latest';

interface ReleaseProject {
  readonly project: ImageProject;
  readonly server: GitHubServer;
  readonly env: Record<string, string>;
  readonly tmp: string;
  readonly mark: string;
  /** Every version of each image ever built here (the release may hold any of them mid-way). */
  readonly versions: Map<string, ImageVersion[]>;
}

/** A built project and a loopback GitHub holding its images (in parts). */
async function releaseProject(options: AreaOptions): Promise<ReleaseProject> {
  const server = await GitHubServer.start({ delayMs: 20, seed: Math.floor(options.random() * 2 ** 31) });
  options.scope.t.teardown(() => server.close());
  const project = await makeImageProject(options.scope.t);
  const tmp = project.path('tmp');
  await mkdir(tmp);
  const mark = newMark();
  const env = {
    TMPDIR: tmp,
    [MARK_VARIABLE]: mark,
    GITHUB_TOKEN: server.token,
    GITHUB_API_URL: server.url,
    GITHUB_REPOSITORY: `${server.owner}/${server.repo}`,
    PIPELINE_MAX_ASSET_SIZE: '200KiB',
    PIPELINE_PART_SIZE: '100KiB',
  };
  const versions = new Map<string, ImageVersion[]>();
  const built = await project.run(['all'], { env, timeoutMs: 300_000 });
  if (built.code !== 0) throw new Error(`chaos: building the project failed: ${built.stderr}`);
  await recordVersions(project, versions);
  return { project, server, env, tmp, mark, versions };
}

async function currentVersion(project: Project, image: string): Promise<ImageVersion> {
  return imageVersion(image, project.path(`images/${image}/${image}.qcow2`));
}

async function recordVersions(project: Project, versions: Map<string, ImageVersion[]>): Promise<void> {
  for (const image of IMAGES) {
    const version = await currentVersion(project, image);
    const known = versions.get(image) ?? [];
    if (!known.some((candidate) => candidate.sha256 === version.sha256)) versions.set(image, [...known, version]);
  }
}

/** Makes one image build to different bytes and builds it (uninterrupted). */
async function changeImage(setup: ReleaseProject, image: string, random: () => number): Promise<void> {
  const template = setup.project.path(`templates/${image}/template.pkr.hcl`);
  const pattern = `0x${Math.floor(16 + random() * 200).toString(16)}`;
  await writeFile(template, (await readFile(template, 'utf8')).replace(/write -P 0x[0-9a-f]+/, `write -P ${pattern}`));
  const result = await setup.project.run([image], { env: setup.env, timeoutMs: 300_000 });
  if (result.code !== 0) throw new Error(`chaos: rebuilding ${image} failed: ${result.stderr}`);
  await recordVersions(setup.project, setup.versions);
}

/** The token must never reach a file: logs, state, temp files. */
async function tokenProblems(setup: ReleaseProject, dirs: readonly string[]): Promise<string[]> {
  const problems: string[] = [];
  for (const dir of [setup.project.root, ...dirs]) {
    for (const path of await walk(dir)) {
      if (path.startsWith('upstream/') || path.startsWith('cache/') || path.endsWith('.qcow2') || path.endsWith('.img')) continue;
      const text = await readFile(join(dir, path), 'utf8').catch(() => '');
      if (text.includes(setup.server.token)) problems.push(`the token is on disk in ${join(dir, path)}`);
    }
  }
  return problems;
}

/** Problems of the release for a set of images, each expected at one of `versions`. */
async function releaseProblemsFor(setup: ReleaseProject, versions: ReadonlyMap<string, readonly ImageVersion[]>, partial: boolean): Promise<string[]> {
  // Checking a subset of the images: images.json may rightly list others too, and what an
  // interrupted upload of another image left is that image's, which the re-run must clear
  // (checked after it).
  return releaseProblems(setup.server, TAG, versions, { subset: partial });
}

/** The problems of how an interrupted run ended (SIGINT: see sigintProblems; SIGKILL: killed, or done first). */
function interruptionProblems(killed: Interrupted): string[] {
  const { result } = killed;
  if (killed.sentAtMs === undefined)
    return result.code === 0 ? [] : [`the run ended by itself with exit ${result.code}: ${result.stderr.trim().split('\n').at(-1)}`];
  if (killed.signal === 'SIGINT') return sigintProblems(killed);
  return result.signal === 'SIGKILL' || result.code === 0 ? [] : [`SIGKILL: ended with exit ${result.code}`];
}

export async function uploadArea(options: AreaOptions): Promise<TrialReport[]> {
  const { random } = options;
  const setup = await releaseProject(options);
  const { project, env } = setup;
  const started = Date.now();
  const first = await project.run([`upload:${TAG}`], { env, timeoutMs: 300_000 });
  if (first.code !== 0) throw new Error(`chaos upload area: the first upload failed: ${first.stderr}`);
  let expectedMs = Date.now() - started;

  const reports: TrialReport[] = [];
  for (let trial = 1; trial <= options.trials && (trial === 1 || Date.now() < options.deadline); trial++) {
    const trialStart = Date.now();
    const problems: string[] = [];
    // Something to replace: one or two images change, or everything is sent again.
    const args = [`upload:${TAG}`];
    if (random() < 0.25) args.push('--force');
    else for (const image of IMAGES) if (random() < 0.5) await changeImage(setup, image, random);
    const signal: KillSignal = random() < 0.5 ? 'SIGKILL' : 'SIGINT';
    const killed = await runAndInterrupt(project, args, env, signal, Math.round(expectedMs * (0.02 + 0.98 * random())), setup.mark);
    if (killed.sentAtMs === undefined && killed.result.code === 0) expectedMs = killed.elapsedMs;
    problems.push(...interruptionProblems(killed));
    if (signal === 'SIGINT' && killed.sentAtMs !== undefined) problems.push(...(await debrisProblems(project, [setup.tmp], setup.mark, 'after SIGINT')));

    // An upload a dry run calls fresh must be on the release, whole and current.
    const dry = await project.run([`upload:${TAG}`, '--dry-run', '--json'], { env });
    if (dry.code !== 0 || !dry.json) problems.push(`dry run after the kill: exit ${dry.code}: ${dry.stderr.trim().split('\n').at(-1)}`);
    else {
      const fresh = new Map<string, ImageVersion[]>();
      for (const node of dry.json.nodes) {
        const image = node.id.replace(/:upload$/, '');
        if (node.status === 'fresh' && node.id.endsWith(':upload')) fresh.set(image, [await currentVersion(project, image)]);
      }
      if (fresh.size > 0) problems.push(...(await releaseProblemsFor(setup, fresh, true)).map((problem) => `taken as fresh: ${problem}`));
    }

    const again = await project.run([`upload:${TAG}`], { env, timeoutMs: 300_000 });
    if (again.code !== 0) problems.push(`re-run: exit ${again.code}: ${again.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    const current = new Map<string, ImageVersion[]>();
    for (const image of IMAGES) current.set(image, [await currentVersion(project, image)]);
    problems.push(...(await releaseProblemsFor(setup, current, false)).map((problem) => `after the re-run: ${problem}`));
    problems.push(...(await debrisProblems(project, [setup.tmp], setup.mark, 'after the re-run')));
    problems.push(...(await tokenProblems(setup, [setup.tmp])));
    const report: TrialReport = { area: 'upload', trial, signal, sentAtMs: killed.sentAtMs, problems, durationMs: Date.now() - trialStart };
    reports.push(report);
    options.onReport?.(report);
  }
  return reports;
}

export async function downloadArea(options: AreaOptions): Promise<TrialReport[]> {
  const { random } = options;
  const setup = await releaseProject(options);
  const { project, server } = setup;
  const uploaded = await project.run([`upload:${TAG}`], { env: setup.env, timeoutMs: 300_000 });
  if (uploaded.code !== 0) throw new Error(`chaos download area: the upload failed: ${uploaded.stderr}`);
  // A fresh host: downloads into its own directory and publishes into its own storage.
  const dir = project.path('fetched');
  const publishDir = project.path('fetched-publish');
  await mkdir(dir);
  await mkdir(publishDir);
  const env = { ...setup.env, PIPELINE_PUBLISH_DIR: publishDir };
  const args = ['images', 'download', 'all', '--dir', dir, '--publish'];
  const wanted = new Map<string, string>();
  for (const image of IMAGES) wanted.set(image, (await currentVersion(project, image)).sha256);

  const started = Date.now();
  const first = await project.run(args, { env, timeoutMs: 300_000 });
  if (first.code !== 0) throw new Error(`chaos download area: the first download failed: ${first.stderr}`);
  let expectedMs = Date.now() - started;

  /** Files under their final names must be whole, verified images (and their published copies). */
  const finalNameProblems = async (when: string): Promise<string[]> => {
    const problems: string[] = [];
    for (const image of IMAGES) {
      for (const path of [join(dir, `${image}.qcow2`), join(publishDir, `${image}.img`)]) {
        const sha = await digest(path).catch(() => undefined);
        if (sha !== undefined && sha !== wanted.get(image)) problems.push(`${when}: ${path} is not the released image (${sha.slice(0, 12)})`);
      }
    }
    return problems;
  };

  const reports: TrialReport[] = [];
  for (let trial = 1; trial <= options.trials && (trial === 1 || Date.now() < options.deadline); trial++) {
    const trialStart = Date.now();
    const problems: string[] = [];
    // Work to interrupt: some downloads and some published copies are gone.
    let removed = 0;
    for (const image of IMAGES) {
      if (random() < 0.7) {
        await rm(join(dir, `${image}.qcow2`), { force: true });
        removed++;
      }
      if (random() < 0.7) await rm(join(publishDir, `${image}.img`), { force: true });
    }
    if (removed === 0) await rm(join(dir, `${IMAGES[0]}.qcow2`), { force: true });
    const signal: KillSignal = random() < 0.5 ? 'SIGKILL' : 'SIGINT';
    const killed = await runAndInterrupt(project, args, env, signal, Math.round(expectedMs * (0.02 + 0.98 * random())), setup.mark);
    if (killed.sentAtMs === undefined && killed.result.code === 0) expectedMs = killed.elapsedMs;
    problems.push(...interruptionProblems(killed));
    if (signal === 'SIGINT' && killed.sentAtMs !== undefined) {
      if (killed.result.code === 130 && /failed: SIG/.test(killed.result.stderr)) problems.push(`SIGINT reported as a failure: ${killed.result.stderr.trim()}`);
    }
    problems.push(...(await finalNameProblems('after the kill')));

    const again = await project.run(args, { env, timeoutMs: 300_000 });
    if (again.code !== 0) problems.push(`re-run: exit ${again.code}: ${again.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    for (const image of IMAGES) {
      for (const path of [join(dir, `${image}.qcow2`), join(publishDir, `${image}.img`)]) {
        if ((await digest(path).catch(() => undefined)) === undefined) problems.push(`after the re-run: ${path} is missing`);
      }
    }
    problems.push(...(await finalNameProblems('after the re-run')));
    const leftovers = [...(await readdir(dir)), ...(await readdir(publishDir))].filter(
      (name) => name.startsWith('.') && !/^\.[a-z0-9.-]+\.img\.source$/.test(name),
    );
    if (leftovers.length > 0) problems.push(`after the re-run: left in the download or publish directory: ${leftovers.join(', ')}`);
    problems.push(...(await debrisProblems(project, [setup.tmp, dir, publishDir], setup.mark, 'after the re-run')));
    problems.push(...(await tokenProblems(setup, [setup.tmp])));
    if (server.releaseCount(TAG) !== 1) problems.push('the release is gone');
    const report: TrialReport = { area: 'download', trial, signal, sentAtMs: killed.sentAtMs, problems, durationMs: Date.now() - trialStart };
    reports.push(report);
    options.onReport?.(report);
  }
  return reports;
}
