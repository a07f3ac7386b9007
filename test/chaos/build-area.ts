// Chaos area "build": `pipeline publish` of the demo-like project (real packer 1.6.6 on
// the null-source templates, real qemu-img) killed with SIGKILL or SIGINT at a random
// moment. After each kill: everything a dry run takes as fresh must be correct; then a
// re-run completes, and nothing is left over: no temp file, scratch dir, key or process.
import { execFile as execFileCallback } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Project, SummaryJson } from '../support/engine-project.ts';
import { IMAGES, makeImageProject, UPSTREAM_FILE, type ImageProject } from '../support/image-project.ts';
import { MARK_VARIABLE, newMark, privateKeysUnder, tempDebris, waitNoMarkedProcesses, walk } from '../support/chaos.ts';
import { runAndInterrupt, sigintProblems, type KillSignal, type Scope, type TrialReport } from './harness.ts';

const execFile = promisify(execFileCallback);

export interface AreaOptions {
  readonly scope: Scope;
  readonly random: () => number;
  readonly trials: number;
  /** No trial but the first starts after this time (ms since the epoch). */
  readonly deadline: number;
  readonly onReport?: (report: TrialReport) => void;
}

export async function digest(path: string, algorithm: 'sha256' | 'sha512' = 'sha256'): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** What is wrong with what a dry run calls fresh, checked against the bytes. */
async function freshOutputProblems(project: ImageProject, dry: SummaryJson): Promise<string[]> {
  const problems: string[] = [];
  const fresh = new Set(dry.nodes.filter((node) => node.status === 'fresh').map((node) => node.id));
  const sums = await readFile(project.path('upstream/SHA512SUMS'), 'utf8');
  for (const [base, file] of Object.entries(UPSTREAM_FILE)) {
    if (!fresh.has(`${base}:download`)) continue;
    const expected = new RegExp(`^([0-9a-f]{128})\\s+\\*?${file}$`, 'm').exec(sums)?.[1];
    const actual = await digest(project.path(`cache/${file}`), 'sha512').catch(() => 'missing');
    if (actual !== expected) problems.push(`${base}:download fresh but cache/${file} is not upstream's (${actual.slice(0, 12)})`);
  }
  for (const image of IMAGES) {
    const file = project.path(`images/${image}/${image}.qcow2`);
    if (fresh.has(`${image}:build`)) {
      const check = await execFile('qemu-img', ['check', '-q', file]).then(
        () => undefined,
        (error: Error) => error.message.split('\n')[0],
      );
      if (check) problems.push(`${image}:build fresh but qemu-img check fails: ${check}`);
      const version = await readFile(project.path(`images/${image}/image-version.txt`), 'utf8').catch(() => '');
      if (!/^DEBIAN_VERSION=\S+$/m.test(version)) problems.push(`${image}:build fresh but image-version.txt is ${JSON.stringify(version.slice(0, 40))}`);
    }
    if (fresh.has(`${image}:checksum`)) {
      const line = await readFile(`${file}.sha256`, 'utf8').catch(() => '');
      const actual = await digest(file).catch(() => 'missing');
      if (line !== `${actual}  ${image}.qcow2\n`)
        problems.push(
          `${image}:checksum fresh but ${image}.qcow2.sha256 (${JSON.stringify(line.slice(0, 20))}) does not match the image (${actual.slice(0, 12)})`,
        );
    }
    if (fresh.has(`${image}:publish`)) {
      const published = await digest(join(project.publishDir, `${image}.img`)).catch(() => 'missing');
      const source = await digest(file).catch(() => 'missing');
      if (published !== source) problems.push(`${image}:publish fresh but ${image}.img (${published.slice(0, 12)}) is not the image (${source.slice(0, 12)})`);
    }
  }
  return problems;
}

/** Leftovers that must never outlive a run that ended (or the next run's start). */
export async function debrisProblems(project: Project, extraDirs: readonly string[], mark: string, when: string): Promise<string[]> {
  const problems: string[] = [];
  const left = await waitNoMarkedProcesses(mark, 5_000);
  if (left.length > 0) problems.push(`${when}: processes left: ${left.map((p) => `${p.pid} ${p.command}`).join(' | ')}`);
  for (const dir of [project.root, ...extraDirs]) {
    const temps = await tempDebris(dir);
    if (temps.length > 0) problems.push(`${when}: temp files left in ${dir}: ${temps.join(', ')}`);
    const keys = await privateKeysUnder(dir);
    if (keys.length > 0) problems.push(`${when}: private keys left in ${dir}: ${keys.join(', ')}`);
  }
  const runDirs = await walk(project.path('.pipeline/run'));
  if (runDirs.length > 0) problems.push(`${when}: scratch dirs left: ${runDirs.join(', ')}`);
  return problems;
}

export async function buildArea(options: AreaOptions): Promise<TrialReport[]> {
  const { random } = options;
  const project = await makeImageProject(options.scope.t);
  const tmp = project.path('tmp');
  await mkdir(tmp);
  const mark = newMark();
  const env = { TMPDIR: tmp, [MARK_VARIABLE]: mark };

  // The first full run tells how long one takes: kills are spread over that span.
  const started = Date.now();
  const first = await project.run(['publish'], { env, timeoutMs: 300_000 });
  if (first.code !== 0) throw new Error(`chaos build area: the first run failed (exit ${first.code}): ${first.stderr}`);
  // How long each kind of run takes when left alone, learnt as trials go.
  const expectedMs = new Map<string, number>([['publish --force', Date.now() - started]]);

  const reports: TrialReport[] = [];
  for (let trial = 1; trial <= options.trials && (trial === 1 || Date.now() < options.deadline); trial++) {
    const trialStart = Date.now();
    const problems: string[] = [];
    // Work to interrupt: everything again, or what one changed upstream base image needs.
    let args = ['publish', '--force'];
    let kind = 'publish --force';
    if (random() < 0.5) {
      const base = random() < 0.5 ? 'bookworm' : 'trixie';
      await project.changeUpstream(base);
      args = ['publish'];
      kind = `upstream ${base} changed`;
    }
    const signal: KillSignal = random() < 0.5 ? 'SIGKILL' : 'SIGINT';
    const span = expectedMs.get(kind) ?? expectedMs.get('publish --force')!;
    const delayMs = Math.round(span * (0.02 + 0.98 * random()));
    const killed = await runAndInterrupt(project, args, env, signal, delayMs, mark);
    const { result } = killed;
    if (killed.sentAtMs === undefined && result.code === 0) expectedMs.set(kind, killed.elapsedMs);
    if (killed.sentAtMs === undefined) {
      if (result.code !== 0) problems.push(`the run ended by itself with exit ${result.code}: ${result.stderr.trim().split('\n').at(-1)}`);
    } else if (signal === 'SIGINT') {
      problems.push(...sigintProblems(killed));
      // Ctrl-C is a clean stop: the run itself leaves nothing.
      problems.push(...(await debrisProblems(project, [project.publishDir, tmp], mark, 'after SIGINT')));
    } else if (result.signal !== 'SIGKILL' && result.code !== 0) {
      problems.push(`SIGKILL: ended with exit ${result.code}`);
    }

    // What the tool now takes as fresh must be right, before anything repairs it.
    const dry = await project.run(['publish', '--dry-run', '--json'], { env });
    if (dry.code !== 0 || !dry.json) problems.push(`dry run after the kill: exit ${dry.code}: ${dry.stderr.trim().split('\n').at(-1)}`);
    else problems.push(...(await freshOutputProblems(project, dry.json)));

    const again = await project.run(['publish', '--json'], { env, timeoutMs: 300_000 });
    if (again.code !== 0) problems.push(`re-run: exit ${again.code}: ${again.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    const after = await project.run(['publish', '--dry-run', '--json'], { env });
    if (after.json) {
      const stale = after.json.nodes.filter((node) => node.status !== 'fresh').map((node) => node.id);
      if (stale.length > 0) problems.push(`after the re-run, not fresh: ${stale.join(', ')}`);
      problems.push(...(await freshOutputProblems(project, after.json)));
    }
    problems.push(...(await debrisProblems(project, [project.publishDir, tmp], mark, 'after the re-run')));
    const report: TrialReport = { area: 'build', trial, signal, sentAtMs: killed.sentAtMs, problems, durationMs: Date.now() - trialStart };
    reports.push(report);
    options.onReport?.(report);
  }
  return reports;
}
