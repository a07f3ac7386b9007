// No-op `pipeline all` on an image tree with three 1 GiB base images and three 1 GiB
// built images, against the shell build script's cache check (a bash loop doing what it
// did: sha256sum of each base image and of the spec files, compared with .cache-key), and
// the checksum task against `sha256sum` of one built image. Both measured in one run.
//
//   node --import=tsx bench/image-noop.ts [--runs N] [--gib G]
//
// The tree is laid out as the shell script left it (cache/, images/{name}/ with a
// .cache-key it computed), so the first `pipeline all` adopts it; that run is timed too.
// Disk use: 6 x G GiB in a temp dir (7 x G while a built image is converted to qcow2), removed afterwards (BENCH_KEEP=1 keeps it).
import { execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { BIN, fmt, median, REPO, timed } from './support.ts';

const IMAGES = [
  { name: 'debian-12', base: 'bookworm', file: 'debian-12-generic-amd64.qcow2' },
  { name: 'debian-13', base: 'trixie', file: 'debian-13-generic-amd64.qcow2' },
  { name: 'pve-9', base: 'trixie-pve', file: 'debian-13-pve-generic-amd64.qcow2' },
];

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, gib: { type: 'string', default: '1' } } });
const runs = Number(values.runs);
const gib = Number(values.gib);

/** The shell build script's cache key for every image, then `action` with $name and $key. */
function shellKeys(action: string): string {
  return `
set -eu
for entry in ${IMAGES.map((image) => `${image.name}:${image.file}`).join(' ')}; do
  name=\${entry%%:*} base=\${entry#*:}
  src=$(sha256sum "cache/$base" | cut -d' ' -f1)
  tpl=$(cat "templates/$name/template.pkr.hcl" "templates/$name/cleanup.sh" shared/scripts/cleanup-common.sh \\
        shared/scripts/detect-versions.sh shared/cloud-init/user-data.pkrtpl shared/cloud-init/meta-data | sha256sum | cut -d' ' -f1)
  key=$(echo "$src:$tpl" | sha256sum | cut -d' ' -f1)
  ${action}
done
`;
}

/** What build.sh did before deciding to skip a build: the cache check. */
const SHELL_CHECK = shellKeys(
  'if [ "$key" = "$(cat "images/$name/.cache-key" 2>/dev/null)" ]; then echo "$name: cache hit"; else echo "$name: cache miss"; fi',
);

const HASHER_ALONE = `
const { StatCache } = await import(${JSON.stringify(pathToFileURL(join(REPO, 'src', 'hasher.ts')).href)});
const hasher = await StatCache.open();
const started = performance.now();
await hasher.hash(process.argv[1], { sha256: true });
process.stdout.write(String(performance.now() - started));
`;

/** Throughput in GB/s (10^9 bytes), as the target is stated. */
function rate(bytes: number, ms: number): string {
  return `${(bytes / ms / 1e6).toFixed(2)} GB/s`;
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'pipeline-image-bench-'));
  try {
    console.log(`tree: ${root} (3 base images and 3 built images of ${gib} GiB each)`);
    await cp(join(REPO, 'demo', 'templates'), join(root, 'templates'), { recursive: true });
    await cp(join(REPO, 'shared'), join(root, 'shared'), { recursive: true });
    await mkdir(join(root, 'cache'));
    await mkdir(join(root, 'upstream'));
    await writeFile(join(root, 'package.json'), '{ "type": "module" }\n');
    const size = `${gib * 1024}M`;
    for (const image of IMAGES) {
      execFileSync('sh', ['-c', 'head -c "$1" /dev/urandom > "$2"', 'sh', size, join(root, 'cache', image.file)]);
      await mkdir(join(root, 'images', image.name), { recursive: true });
      // A built image is a real qcow2 (adoption takes only a self-contained one), of random data.
      const raw = join(root, 'images', image.name, 'raw');
      execFileSync('sh', ['-c', 'head -c "$1" /dev/urandom > "$2"', 'sh', size, raw]);
      execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, join(root, 'images', image.name, `${image.name}.qcow2`)]);
      await rm(raw);
      await writeFile(join(root, 'images', image.name, 'image-version.txt'), 'DEBIAN_VERSION=13.3\nPVE_VERSION=\n');
    }
    // The upstream list names the cached files, as cloud.debian.org's does.
    const sums = execFileSync(
      'sha512sum',
      IMAGES.map((image) => image.file),
      { cwd: join(root, 'cache'), encoding: 'utf8' },
    );
    await writeFile(join(root, 'upstream', 'SHA512SUMS'), sums);
    // .cache-key and .sha256 as the shell scripts wrote them.
    execFileSync('bash', ['-c', shellKeys('echo "$key" > "images/$name/.cache-key"')], { cwd: root });
    for (const image of IMAGES) {
      execFileSync('sh', ['-c', 'cd "$1" && sha256sum "$2" > "$2.sha256"', 'sh', join(root, 'images', image.name), `${image.name}.qcow2`]);
    }
    const bases = Object.fromEntries(
      IMAGES.map((image) => [
        image.base,
        {
          url: pathToFileURL(join(root, 'upstream', image.file)).href,
          checksumsUrl: pathToFileURL(join(root, 'upstream', 'SHA512SUMS')).href,
          file: `cache/${image.file}`,
        },
      ]),
    );
    await writeFile(
      join(root, 'pipeline.config.ts'),
      `import { defineConfig } from ${JSON.stringify(join(REPO, 'dist', 'index.js'))};
export default defineConfig({
  bases: ${JSON.stringify(bases)},
  images: ${JSON.stringify(Object.fromEntries(IMAGES.map((image) => [image.name, { base: image.base }])))},
  publishDir: ${JSON.stringify(join(root, 'publish'))},
});
`,
    );

    const adopt = await timed(process.execPath, [BIN, 'all', '--json'], root);
    if (adopt.code !== 0) throw new Error(`adopting run failed: ${adopt.stderr}`);
    const adoptJson = JSON.parse(adopt.stdout) as { ran: number; bytesHashed: number; nodes: Array<{ id: string; status: string }> };
    const rebuilt = adoptJson.nodes.filter((node) => node.id.endsWith(':build') && node.status === 'ran');
    console.log(
      `adopting run: ${fmt(adopt.ms)}, ${adoptJson.ran} ran, ${(adoptJson.bytesHashed / 2 ** 30).toFixed(2)} GiB hashed, builds re-run: ${rebuilt.length}`,
    );

    const pipelineMs: number[] = [];
    const pipelineBytes: number[] = [];
    const shellMs: number[] = [];
    const sha256sumMs: number[] = [];
    const checksumMs: number[] = [];
    const checksumWallMs: number[] = [];
    const checksumBytes: number[] = [];
    const hasherAloneMs: number[] = [];
    // As in bench/noop.ts: NODE_EXTRA_CA_CERTS makes every Node process parse that CA bundle
    // first (the shell loop pays nothing of it); when it is set, the no-op is also timed
    // without it, as on a host that does not set it.
    const extraCerts = process.env.NODE_EXTRA_CA_CERTS ? ['NODE_EXTRA_CA_CERTS'] : [];
    const pipelineBareMs: number[] = [];
    // Times on a shared machine depend on its load: say what it was while measuring.
    const loadBefore = loadavg();
    for (let i = 0; i < runs; i++) {
      const noop = await timed(process.execPath, [BIN, 'all', '--json', '--offline'], root);
      if (noop.code !== 0) throw new Error(`no-op run failed: ${noop.stderr}`);
      const summary = JSON.parse(noop.stdout) as { ran: number; bytesHashed: number };
      if (summary.ran !== 0) throw new Error(`the no-op run ran ${summary.ran} nodes`);
      pipelineMs.push(noop.ms);
      pipelineBytes.push(summary.bytesHashed);
      if (extraCerts.length > 0) pipelineBareMs.push((await timed(process.execPath, [BIN, 'all', '--json', '--offline'], root, extraCerts)).ms);
      const shell = await timed('bash', ['-c', SHELL_CHECK], root);
      if (!/cache hit/.test(shell.stdout) || /miss/.test(shell.stdout)) throw new Error(`shell check: ${shell.stdout}${shell.stderr}`);
      shellMs.push(shell.ms);
      // Checksumming one image whose stat changed (as after a rebuild): the engine's run
      // re-reads it once for xxh64 and SHA-256 together; against sha256sum of the file.
      const image = join(root, 'images', 'debian-12', 'debian-12.qcow2');
      sha256sumMs.push((await timed('sha256sum', [image], root)).ms);
      await rm(join(root, '.pipeline', 'stamps', `${encodeURIComponent('debian-12:checksum')}.json`));
      execFileSync('touch', [image]);
      const checksum = await timed(process.execPath, [BIN, 'debian-12:checksum', '--json', '--offline'], root);
      if (checksum.code !== 0) throw new Error(`checksum run failed: ${checksum.stderr}`);
      const checksumSummary = JSON.parse(checksum.stdout) as { wallMs: number; bytesHashed: number };
      if (checksumSummary.bytesHashed < gib * 2 ** 30) throw new Error('the checksum run did not re-read the image');
      checksumMs.push(checksumSummary.wallMs);
      checksumWallMs.push(checksum.ms);
      checksumBytes.push(checksumSummary.bytesHashed);
      // The hasher alone on the same file (what bench/checksum.ts measures): the compiled
      // src/hasher.ts in a fresh process, as the CLI has it (its SHA-256 thread starts
      // cold), timed inside that process so Node's start-up is left out.
      // The hasher's source through tsx (dist/ is bundled): the timing starts after the import.
      const alone = await timed(process.execPath, [`--import=${import.meta.resolve('tsx')}`, '--input-type=module', '-e', HASHER_ALONE, image], root);
      if (alone.code !== 0) throw new Error(`hasher alone failed: ${alone.stderr}`);
      hasherAloneMs.push(Number(alone.stdout));
    }

    const rows: Array<[string, string, string]> = [
      ['no-op `pipeline all --offline` (process wall)', fmt(median(pipelineMs)), `bytes hashed per run: ${pipelineBytes.join(', ')}`],
      ['shell cache check loop (sha256sum of bases + spec files)', fmt(median(shellMs)), `${IMAGES.length * gib} GiB read per run`],
      ['`sha256sum` of one built image', fmt(median(sha256sumMs)), `${gib} GiB`],
      [
        '`pipeline debian-12:checksum` after the image changed (engine wallMs)',
        fmt(median(checksumMs)),
        `xxh64 + SHA-256 in one read: ${rate(median(checksumBytes), median(checksumMs))} by the run's bytesHashed / wallMs`,
      ],
      [
        '  the same run, process wall',
        fmt(median(checksumWallMs)),
        `${rate(median(checksumBytes), median(checksumWallMs))} including Node start-up and planning`,
      ],
      ['the hasher alone on that image (a fresh process, start-up excluded)', fmt(median(hasherAloneMs)), rate(gib * 2 ** 30, median(hasherAloneMs))],
    ];
    if (extraCerts.length > 0) rows.splice(1, 0, ['  the same, without NODE_EXTRA_CA_CERTS', fmt(median(pipelineBareMs)), '']);
    const load = (values: number[]): string => values.map((value) => value.toFixed(2)).join(', ');
    console.log(`\nload average (1, 5, 15 min): ${load(loadBefore)} before the runs, ${load(loadavg())} after`);
    console.log('\n| measurement | median | notes |\n|---|---:|---|');
    for (const [what, time, notes] of rows) console.log(`| ${what} | ${time} | ${notes} |`);
    console.log(`\nratio shell check / no-op pipeline: ${(median(shellMs) / median(pipelineMs)).toFixed(1)}x`);
    if (extraCerts.length > 0) console.log(`  without NODE_EXTRA_CA_CERTS: ${(median(shellMs) / median(pipelineBareMs)).toFixed(1)}x`);
    console.log(`ratio checksum task / sha256sum: ${(median(checksumMs) / median(sha256sumMs)).toFixed(2)}x`);
    console.log(`ratio in-CLI hashing (wallMs) / the hasher alone: ${(median(checksumMs) / median(hasherAloneMs)).toFixed(2)}x`);
    const zero = pipelineBytes.every((bytes) => bytes === 0);
    console.log(zero ? 'PASS: every no-op run hashed 0 bytes' : 'FAIL: a no-op run read file content');
    process.exitCode = zero ? 0 : 1;
  } finally {
    if (process.env.BENCH_KEEP !== '1') await rm(root, { recursive: true, force: true });
  }
}

await main();
