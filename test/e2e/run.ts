// The end-to-end check (issue 5): a real Debian image built, released, fetched back and
// booted on this machine, through the real `pipeline` CLI.
//
//   node --import=tsx test/e2e/run.ts        (npm run e2e)
//
// 1. tools: one line naming what to install when mmdebstrap, qemu-system-x86_64, xorriso,
//    packer, qemu-img, mkfs.ext4/debugfs or ssh-keygen is missing (scripts/e2e-deps.sh).
// 2. pass 1: `pipeline --config test/e2e/pipeline.config.ts e2e-debian:publish upload:latest --json`
//    (base bootstrap, download, packer build under TCG, checksum, publish into a temp dir,
//    upload to the GitHub loopback server split into parts); every node's wall time printed.
// 3. pass 2: the same command again; every node must be fresh.
// 4. `pipeline images download e2e-debian --version=latest --publish --dir …` from the loopback release
//    into another directory; the reassembled image must equal the built one.
// 5. boot check: the image the consumer published, checked offline (identity reset, journal
//    rotated), then booted twice side by side under qemu-system-x86_64 -accel tcg, each
//    clone with its own cidata seed: their serial consoles and guest agents must show the
//    provisioning, and the clones must differ in machine-id, SSH host keys and hostname,
//    have run cloud-init afresh and read their journals cleanly.
//
// Environment: E2E_WORK (default $TMPDIR/pipeline-e2e: publish dirs, downloads, the loopback
// release kept between invocations), E2E_GITHUB_PORT (default 47181), E2E_TIMEOUT_S (whole
// run, default 1500), E2E_BOOT_TIMEOUT_S (each clone's boot, default 480), E2E_SKIP_GITHUB=1
// (publish only), E2E_BOOT_IMAGE=FILE (only the boot check, on FILE).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const E2E = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(E2E, '..', '..');
const BIN = join(REPO, 'bin', 'pipeline.js');
const CONFIG = join(E2E, 'pipeline.config.ts');
const IMAGE = 'e2e-debian';
const TAG = 'latest';
const REPOSITORY = 'acme/images';
const WORK = resolve(process.env.E2E_WORK || join(tmpdir(), 'pipeline-e2e'));
const GITHUB_PORT = Number(process.env.E2E_GITHUB_PORT || 47181);
const DEADLINE = Date.now() + Number(process.env.E2E_TIMEOUT_S || 1500) * 1000;
/** Parts small enough that the image is split into several (it is a few hundred MiB). */
const PART_SIZE = '64M';
const BOOT_TIMEOUT_MS = Number(process.env.E2E_BOOT_TIMEOUT_S || 480) * 1000;
/** The boot check's clones: two VMs from the one image, booted side by side. */
const CLONES = ['e2e-clone-a', 'e2e-clone-b'] as const;

const TOOLS: ReadonlyArray<readonly [program: string, pkg: string]> = [
  ['mmdebstrap', 'mmdebstrap'],
  ['qemu-system-x86_64', 'qemu-system-x86'],
  ['xorriso', 'xorriso'],
  ['packer', 'packer'],
  ['qemu-img', 'qemu-utils'],
  ['mkfs.ext4', 'e2fsprogs'],
  ['debugfs', 'e2fsprogs'],
  ['ssh-keygen', 'openssh-client'],
];

interface NodeJson {
  id: string;
  status: string;
  reason?: string;
  durationMs: number;
  error?: string;
  logFile?: string;
}

interface SummaryJson {
  ok: boolean;
  wallMs: number;
  nodes: NodeJson[];
}

class E2eFailure extends Error {}

const children = new Set<ChildProcess>();
const started = Date.now();

function say(line: string): void {
  const seconds = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[e2e ${seconds}s] ${line}\n`);
}

function fail(message: string): never {
  throw new E2eFailure(message);
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

// ---------------------------------------------------------------------------------------
// Processes: each child leads its own process group, killed whole on timeout or Ctrl-C.

interface Ran {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

interface RunOptions {
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  readonly timeoutMs: number;
  /** Prefix for live stderr lines; without it stderr is only collected. */
  readonly echo?: string;
  /** Signal sent first on timeout (the CLI cleans up on SIGINT); SIGKILL follows. */
  readonly stopSignal?: NodeJS.Signals;
  /** Called with the child once spawned (to stop this one process group alone). */
  readonly onChild?: (child: ChildProcess) => void;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

function run(file: string, args: readonly string[], options: RunOptions): Promise<Ran> {
  const begin = Date.now();
  const timeoutMs = Math.max(1000, Math.min(options.timeoutMs, DEADLINE - Date.now()));
  const child = spawn(file, args, {
    cwd: options.cwd ?? REPO,
    env: { ...process.env, ...options.env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  options.onChild?.(child);
  let stdout = '';
  let stderr = '';
  let pending = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => {
    const text = chunk.toString();
    stderr += text;
    if (options.echo === undefined) return;
    pending += text;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) process.stderr.write(`  ${options.echo} | ${line}\n`);
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child, options.stopSignal ?? 'SIGTERM');
    setTimeout(() => killGroup(child, 'SIGKILL'), 20_000).unref();
  }, timeoutMs);
  return new Promise((resolvePromise, reject) => {
    child.on('error', (error) => {
      clearTimeout(timer);
      children.delete(child);
      reject(new E2eFailure(`cannot run ${file}: ${error.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      if (options.echo !== undefined && pending) process.stderr.write(`  ${options.echo} | ${pending}\n`);
      if (timedOut) {
        reject(new E2eFailure(`${file} ${args.join(' ')}: no result within ${seconds(timeoutMs)}; its process group was killed\n${tail(stderr)}`));
        return;
      }
      resolvePromise({ code, signal, stdout, stderr, ms: Date.now() - begin });
    });
  });
}

function tail(text: string, lines = 25): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

async function onPath(program: string): Promise<boolean> {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean);
  for (const dir of [...dirs, '/usr/sbin', '/sbin']) {
    try {
      const info = await stat(join(dir, program));
      if (info.isFile() && (info.mode & 0o111) !== 0) return true;
    } catch {
      // not here
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------
// 1. Tools

async function checkTools(): Promise<void> {
  const missing: Array<readonly [string, string]> = [];
  for (const tool of TOOLS) if (!(await onPath(tool[0]))) missing.push(tool);
  if (missing.length > 0) {
    const packages = [...new Set(missing.map(([, pkg]) => pkg))].join(' ');
    fail(`missing ${missing.map(([program]) => program).join(', ')}: apt-get install ${packages} (or sh scripts/e2e-deps.sh)`);
  }
  if (process.getuid?.() !== 0) {
    fail('run as root: make-base.sh (mmdebstrap, mkfs.ext4 -d) must create root-owned files in the image');
  }
}

// ---------------------------------------------------------------------------------------
// GitHub loopback server, on a fixed port (GITHUB_API_URL is part of the upload node's
// fingerprint), with its release kept in WORK/github between invocations as GitHub keeps it.

interface GitHubSide {
  readonly apiUrl: string;
  readonly token: string;
  assets(): Array<{ name: string; size: number }>;
  save(): Promise<void>;
  close(): Promise<void>;
}

type ServerModule = typeof import('../support/github-server.ts');

async function startGitHub(): Promise<GitHubSide | string> {
  let module: ServerModule;
  try {
    module = await import('../support/github-server.ts');
  } catch (error) {
    return `test/support/github-server.ts is not usable (${error instanceof Error ? error.message.split('\n')[0] : error})`;
  }
  const [owner, repo] = REPOSITORY.split('/') as [string, string];
  const server = await module.GitHubServer.start({ owner, repo });
  const stateDir = join(WORK, 'github', TAG);
  const manifest = join(stateDir, 'assets.json');
  if (existsSync(manifest)) {
    const names = JSON.parse(await readFile(manifest, 'utf8')) as string[];
    server.createRelease(TAG, { name: 'Latest Images', prerelease: true });
    for (const name of names) await server.putAsset(TAG, name, await readFile(join(stateDir, name)));
    say(`loopback release ${TAG}: restored ${names.length} assets from ${stateDir}`);
  }
  const upstream = new URL(server.url);
  const proxy = http.createServer((request, response) => {
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, method: request.method, path: request.url, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    forward.on('error', () => response.destroy());
    request.pipe(forward);
  });
  await new Promise<void>((resolvePromise, reject) => {
    proxy.once('error', reject);
    proxy.listen(GITHUB_PORT, '127.0.0.1', () => resolvePromise());
  }).catch(async (error: unknown) => {
    await server.close();
    fail(`cannot listen on 127.0.0.1:${GITHUB_PORT} for the GitHub loopback server (${error instanceof Error ? error.message : error}); set E2E_GITHUB_PORT`);
  });
  return {
    apiUrl: `http://127.0.0.1:${GITHUB_PORT}`,
    token: server.token,
    assets: () => server.assets(TAG).filter((asset) => asset.state === 'uploaded'),
    async save() {
      await rm(stateDir, { recursive: true, force: true });
      await mkdir(stateDir, { recursive: true });
      const names = server
        .assets(TAG)
        .filter((asset) => asset.state === 'uploaded')
        .map((asset) => asset.name);
      for (const name of names) await writeFile(join(stateDir, name), await server.assetBytes(TAG, name));
      await writeFile(manifest, `${JSON.stringify(names)}\n`);
    },
    async close() {
      await new Promise<void>((resolvePromise) => proxy.close(() => resolvePromise()));
      proxy.closeAllConnections();
      await server.close();
    },
  };
}

// ---------------------------------------------------------------------------------------
// 2./3. The pipeline passes

async function pipelinePass(label: string, targets: readonly string[], env: Record<string, string>): Promise<SummaryJson> {
  say(`${label}: pipeline --config test/e2e/pipeline.config.ts ${targets.join(' ')} --json`);
  const result = await run(process.execPath, [BIN, '--config', CONFIG, ...targets, '--json'], {
    env,
    // Bounded by the whole run's deadline (E2E_TIMEOUT_S) alone: on a loaded machine the
    // base bootstrap by itself can take most of it.
    timeoutMs: Number.POSITIVE_INFINITY,
    echo: label,
    stopSignal: 'SIGINT',
  });
  let summary: SummaryJson | undefined;
  try {
    summary = JSON.parse(result.stdout) as SummaryJson;
  } catch {
    summary = undefined;
  }
  if (summary) printNodes(label, summary);
  if (result.code !== 0 || !summary?.ok) {
    const failed = summary?.nodes.filter((node) => node.status === 'failed') ?? [];
    for (const node of failed) {
      if (node.logFile && existsSync(node.logFile)) {
        process.stderr.write(`--- ${node.logFile} (tail)\n${tail(await readFile(node.logFile, 'utf8'), 40)}\n`);
      }
    }
    fail(
      `${label}: pipeline exited ${result.code ?? result.signal}: ${failed.map((node) => `${node.id}: ${node.error ?? 'failed'}`).join('; ') || tail(result.stderr, 5)}`,
    );
  }
  return summary;
}

function printNodes(label: string, summary: SummaryJson): void {
  const width = Math.max(...summary.nodes.map((node) => node.id.length));
  process.stderr.write(`${label}: wall ${seconds(summary.wallMs)}\n`);
  for (const node of summary.nodes) {
    const reason = node.status === 'fresh' ? '' : `  (${node.reason ?? ''})`;
    process.stderr.write(`  ${node.id.padEnd(width)}  ${node.status.padEnd(9)} ${seconds(node.durationMs).padStart(8)}${reason}\n`);
  }
}

// ---------------------------------------------------------------------------------------
// Files

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function sizeOf(path: string): Promise<number> {
  return (await stat(path)).size;
}

// ---------------------------------------------------------------------------------------
// 5. Boot check: two clones of the one image, side by side

/** debugfs on a raw ext4 image (read-only). */
async function debugfs(raw: string, request: string): Promise<string> {
  const result = await run('debugfs', ['-R', request, raw], { timeoutMs: 120_000 });
  if (result.code !== 0) fail(`debugfs -R '${request}' failed: ${tail(result.stderr, 3)}`);
  return result.stdout;
}

interface DirEntry {
  readonly name: string;
  readonly directory: boolean;
  readonly size: number;
}

/** `ls -p` of a directory in the image: /inode/mode/uid/gid/name/size/ per entry. */
async function listImageDir(raw: string, path: string): Promise<DirEntry[]> {
  const entries: DirEntry[] = [];
  for (const line of (await debugfs(raw, `ls -p ${path}`)).split('\n')) {
    const [, , mode, , , name, size] = line.split('/');
    if (!mode || !name || name === '.' || name === '..') continue;
    entries.push({ name, directory: mode.startsWith('04'), size: Number(size) });
  }
  return entries;
}

async function inspectOffline(image: string, dir: string): Promise<{ kernel: string; initrd: string }> {
  const raw = join(dir, 'disk.raw');
  const converted = await run('qemu-img', ['convert', '-O', 'raw', image, raw], { timeoutMs: 300_000 });
  if (converted.code !== 0) fail(`qemu-img convert -O raw ${image}: ${tail(converted.stderr, 3)}`);
  try {
    const size = async (path: string): Promise<number | undefined> => {
      const out = await debugfs(raw, `stat ${path}`);
      const match = /Size: (\d+)/.exec(out);
      return match ? Number(match[1]) : undefined;
    };
    // The build's journal: rotated and vacuumed by cleanup-common.sh, never truncated under
    // journald (a truncated journal file is an empty *.journal).
    const journals: Array<{ path: string; size: number }> = [];
    for (const machine of (await listImageDir(raw, '/var/log/journal')).filter((entry) => entry.directory)) {
      for (const file of await listImageDir(raw, `/var/log/journal/${machine.name}`)) {
        if (/\.journal~?$/.test(file.name)) journals.push({ path: `${machine.name}/${file.name}`, size: file.size });
      }
    }
    say(`  offline: the build's journal: ${journals.map((file) => `${file.path} (${file.size} B)`).join(', ') || 'none'}`);
    const leases = (await listImageDir(raw, '/var/lib/dhcp').catch(() => [])).filter((entry) => entry.name.endsWith('.leases'));
    say(`  offline: DHCP lease files left by the build's shutdown: ${leases.map((entry) => entry.name).join(', ') || 'none'}`);
    const checks: Array<[string, boolean]> = [
      ['/etc/machine-id is empty before first boot', (await size('/etc/machine-id')) === 0],
      ['/etc/hostname is reset to localhost', (await debugfs(raw, 'cat /etc/hostname')).trim() === 'localhost'],
      ['/etc/modprobe.d/vm-template-blacklist.conf exists', ((await size('/etc/modprobe.d/vm-template-blacklist.conf')) ?? 0) > 0],
      ['qemu-guest-agent is installed (dpkg file list)', ((await size('/var/lib/dpkg/info/qemu-guest-agent.list')) ?? 0) > 0],
      ['no SSH host keys', !/ssh_host_/.test(await debugfs(raw, 'ls /etc/ssh'))],
      ['no sshd setting from the build seed (sshd_config.d/50-cloud-init.conf)', (await size('/etc/ssh/sshd_config.d/50-cloud-init.conf')) === undefined],
      ['no authorized_keys of the build user', (await size('/home/debian/.ssh/authorized_keys')) === undefined],
      ['the build-only fw_cfg seed hook is gone (cleanup.sh)', (await size('/usr/local/sbin/pipeline-e2e-seed')) === undefined],
      ['cloud-init state cleaned', (await size('/var/lib/cloud/instance')) === undefined],
      ['the journal was rotated, not truncated (no empty journal file)', journals.length > 0 && journals.every((file) => file.size > 0)],
      ["the build's archived journal files were vacuumed", journals.every((file) => !file.path.includes('@'))],
    ];
    for (const [what, ok] of checks) {
      say(`  offline: ${ok ? 'ok  ' : 'FAIL'} ${what}`);
      if (!ok) fail(`offline check failed: ${what}`);
    }
    const boot = await debugfs(raw, 'ls -p /boot');
    const version = /\/vmlinuz-([^/]+)\//.exec(boot)?.[1];
    if (!version) fail(`no /boot/vmlinuz-* in ${image}`);
    const kernel = join(dir, 'vmlinuz');
    const initrd = join(dir, 'initrd.img');
    await debugfs(raw, `dump /boot/vmlinuz-${version} ${kernel}`);
    await debugfs(raw, `dump /boot/initrd.img-${version} ${initrd}`);
    say(`  offline: kernel ${version} and its initrd taken from the image's /boot`);
    return { kernel, initrd };
  } finally {
    await rm(raw, { force: true });
  }
}

// The boot check's seed: a clone's first boot. The markers go straight to the serial
// console. The journal check rotates first, then verifies every file but the clone's
// new active ones (still being written): the build's files and the clone's archives.
const BOOT_USER_DATA = `#cloud-config
runcmd:
  - |
    {
    echo "E2E-BEGIN"
    echo "E2E machine-id=$(cat /etc/machine-id)"
    if [ -s /etc/modprobe.d/vm-template-blacklist.conf ]; then echo "E2E blacklist=present"; else echo "E2E blacklist=missing"; fi
    echo "E2E initrd-blacklist=$(lsinitramfs /boot/initrd.img-$(uname -r) 2>/dev/null | grep -c vm-template-blacklist.conf)"
    echo "E2E qemu-guest-agent=$(dpkg-query -W -f='\${Status}' qemu-guest-agent 2>&1)"
    echo "E2E qga-active=$(systemctl is-active qemu-guest-agent)"
    echo "E2E hostkeys=$(ls /etc/ssh/ssh_host_*_key 2>/dev/null | wc -l)"
    echo "E2E hostkey=$(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null | cut -d' ' -f2)"
    echo "E2E hostname=$(hostname)"
    echo "E2E cloud-instance-id=$(cat /var/lib/cloud/data/instance-id)"
    echo "E2E cloud-instances=$(ls /var/lib/cloud/instances | tr '\\n' ' ')"
    journalctl --rotate >/dev/null 2>&1
    own=/var/log/journal/$(cat /etc/machine-id)
    set --
    for file in $(find /var/log/journal -name '*.journal' ! -path "$own/system.journal" ! -path "$own/user-*.journal"); do set -- "$@" --file="$file"; done
    echo "E2E journal-dirs=$(ls /var/log/journal | wc -l)"
    echo "E2E journal-files=$#"
    if [ $# -gt 0 ]; then journalctl --verify --quiet "$@" > /tmp/journal-verify.log 2>&1; echo "E2E journal-verify=$?"; else echo "E2E journal-verify=none"; fi
    echo "E2E-END"
    } > /dev/ttyS0 2>&1
`;

interface CloneBoot {
  readonly name: string;
  readonly instanceId: string;
  readonly markers: Map<string, string>;
  readonly agent: { ok: boolean; detail: string; hostName?: string };
  readonly console: string;
}

/** Boots one clone (its own seed, overlay, console and agent socket) until its markers are in. */
async function bootClone(name: string, image: string, boot: { kernel: string; initrd: string }, dir: string): Promise<CloneBoot> {
  const instanceId = `${name}-${Date.now()}`;
  const seed = join(dir, `${name}-seed`);
  await mkdir(seed);
  await writeFile(join(seed, 'user-data'), BOOT_USER_DATA);
  await writeFile(join(seed, 'meta-data'), `instance-id: ${instanceId}\nlocal-hostname: ${name}\n`);
  const iso = join(dir, `${name}-seed.iso`);
  const made = await run(
    'xorriso',
    ['-as', 'mkisofs', '-quiet', '-volid', 'cidata', '-joliet', '-rock', '-output', iso, join(seed, 'user-data'), join(seed, 'meta-data')],
    { timeoutMs: 60_000 },
  );
  if (made.code !== 0) fail(`xorriso: ${tail(made.stderr, 5)}`);

  const consoleLog = join(dir, `${name}-console.log`);
  const qgaSocket = join(dir, `${name}-qga.sock`);
  // One vCPU each: two TCG guests side by side then use the two host cores without
  // contending for them.
  const args = [
    '-accel',
    'tcg',
    '-machine',
    'pc',
    '-m',
    '1024',
    '-smp',
    '1',
    '-display',
    'none',
    '-monitor',
    'none',
    '-no-reboot',
    '-serial',
    `file:${consoleLog}`,
    '-kernel',
    boot.kernel,
    '-initrd',
    boot.initrd,
    '-append',
    'root=/dev/vda rw console=ttyS0',
    // snapshot=on: each clone writes to its own temporary overlay; the image stays as built.
    '-drive',
    `file=${image},if=virtio,format=qcow2,snapshot=on`,
    '-drive',
    `file=${iso},media=cdrom,readonly=on`,
    '-netdev',
    'user,id=net0',
    '-device',
    'virtio-net-pci,netdev=net0',
    '-device',
    'virtio-serial',
    '-chardev',
    `socket,path=${qgaSocket},server=on,wait=off,id=qga0`,
    '-device',
    'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
  ];
  say(`  ${name}: qemu-system-x86_64 -accel tcg … (console: ${consoleLog})`);
  let vm: ChildProcess | undefined;
  const qemu = run('qemu-system-x86_64', args, { timeoutMs: BOOT_TIMEOUT_MS, onChild: (child) => (vm = child) });
  let exited = false;
  const qemuDone = qemu.then(
    (result) => {
      exited = true;
      return result;
    },
    (error: unknown) => {
      exited = true;
      throw error;
    },
  );
  qemuDone.catch(() => undefined);
  const stop = (): void => {
    if (vm) killGroup(vm, 'SIGKILL');
  };

  const bootStart = Date.now();
  let text = '';
  while (!/^E2E-END/m.test(text)) {
    if (exited) {
      const result = await qemuDone;
      fail(
        `${name} stopped before the markers (qemu exit ${result.code ?? result.signal}): ${tail(result.stderr, 5)}\n--- console tail\n${tail(await readFile(consoleLog, 'utf8').catch(() => ''), 30)}`,
      );
    }
    if (Date.now() - bootStart > BOOT_TIMEOUT_MS - 30_000) {
      stop();
      fail(
        `${name}: no E2E-END on the console within ${seconds(BOOT_TIMEOUT_MS - 30_000)}\n--- console tail\n${tail(await readFile(consoleLog, 'utf8').catch(() => ''), 30)}`,
      );
    }
    await new Promise((resolveWait) => setTimeout(resolveWait, 2000));
    text = await readFile(consoleLog, 'utf8').catch(() => '');
  }
  const markers = new Map<string, string>();
  for (const match of text.matchAll(/^E2E ([a-z-]+)=(.*?)\r?$/gm)) markers.set(match[1]!, match[2]!);
  say(`  ${name}: markers after ${seconds(Date.now() - bootStart)}: ${[...markers].map(([key, value]) => `${key}=${value}`).join(' ')}`);
  const agent = await guestAgent(qgaSocket);
  say(`  ${name}: guest agent: ${agent.detail}`);
  // Power off through the agent; the disk is a snapshot, so the clone's QEMU is killed if
  // the (slow, emulated) shutdown takes longer than a moment.
  await guestAgentShutdown(qgaSocket);
  const stopBy = Date.now() + 20_000;
  while (!exited && Date.now() < stopBy) await new Promise((resolveWait) => setTimeout(resolveWait, 1000));
  if (!exited) stop();
  await qemuDone.catch(() => undefined);
  say(`  ${name}: VM ${exited ? 'powered off' : 'stopped (process group killed)'} after ${seconds(Date.now() - bootStart)}`);
  return { name, instanceId, markers, agent, console: text };
}

async function bootCheck(image: string): Promise<void> {
  const dir = await mkdtemp(join(WORK, 'boot-'));
  try {
    say(`boot check: ${image}`);
    const boot = await inspectOffline(image, dir);
    const begin = Date.now();
    // Both clones at once: their first boots are what must differ.
    const clones = await Promise.all(CLONES.map((name) => bootClone(name, image, boot, dir)));
    say(`  both clones booted and checked in ${seconds(Date.now() - begin)}`);

    const checks: Array<[string, boolean]> = [];
    for (const clone of clones) {
      const marker = (key: string): string => clone.markers.get(key) ?? '';
      const instances = marker('cloud-instances').trim().split(/\s+/);
      checks.push(
        [`${clone.name}: machine-id set on first boot`, /^[0-9a-f]{32}$/.test(marker('machine-id'))],
        [`${clone.name}: module blacklist present`, marker('blacklist') === 'present'],
        [`${clone.name}: module blacklist in the rebuilt initramfs`, Number(marker('initrd-blacklist') || 0) > 0],
        [`${clone.name}: qemu-guest-agent installed`, /install ok installed/.test(marker('qemu-guest-agent'))],
        [`${clone.name}: qemu-guest-agent running`, marker('qga-active') === 'active'],
        [`${clone.name}: SSH host keys made on first boot`, Number(marker('hostkeys') || 0) > 0 && /^SHA256:/.test(marker('hostkey'))],
        [`${clone.name}: took its seed's hostname`, marker('hostname') === clone.name],
        [
          `${clone.name}: cloud-init ran fresh (its own instance, nothing of the build's)`,
          marker('cloud-instance-id') === clone.instanceId && instances.length === 1 && instances[0] === clone.instanceId,
        ],
        [
          `${clone.name}: its journal files verify (${marker('journal-files')} files)`,
          Number(marker('journal-files') || 0) > 0 && marker('journal-verify') === '0',
        ],
        [`${clone.name}: guest agent answers guest-sync, guest-get-osinfo and guest-get-host-name`, clone.agent.ok && clone.agent.hostName === clone.name],
      );
    }
    const [a, b] = clones as [CloneBoot, CloneBoot];
    checks.push(
      ['the clones have different machine-ids', a.markers.get('machine-id') !== b.markers.get('machine-id')],
      ['the clones have different SSH host keys', a.markers.get('hostkey') !== b.markers.get('hostkey')],
      ['the clones have different hostnames', a.markers.get('hostname') !== b.markers.get('hostname')],
    );
    for (const [what, ok] of checks) say(`  boot: ${ok ? 'ok  ' : 'FAIL'} ${what}`);
    const failed = checks.filter(([, ok]) => !ok).map(([what]) => what);
    if (failed.length > 0) {
      fail(`boot check failed: ${failed.join('; ')}\n${clones.map((clone) => `--- ${clone.name} console tail\n${tail(clone.console, 30)}`).join('\n')}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** One QGA request/response over the chardev socket. */
function qga(socketPath: string, requests: readonly object[], timeoutMs: number): Promise<string> {
  return new Promise((resolvePromise) => {
    const socket = net.connect(socketPath);
    let answer = '';
    const done = (): void => {
      socket.destroy();
      resolvePromise(answer);
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on('connect', () => {
      for (const request of requests) socket.write(`${JSON.stringify(request)}\n`);
    });
    socket.on('data', (chunk) => {
      answer += chunk.toString();
      if (answer.split('\n').filter((line) => line.includes('"return"')).length >= requests.length) {
        clearTimeout(timer);
        done();
      }
    });
    socket.on('error', () => {
      clearTimeout(timer);
      done();
    });
  });
}

async function guestAgent(socketPath: string): Promise<{ ok: boolean; detail: string; hostName?: string }> {
  const id = Math.floor(Math.random() * 1e9);
  const answer = await qga(
    socketPath,
    [{ execute: 'guest-sync', arguments: { id } }, { execute: 'guest-get-osinfo' }, { execute: 'guest-get-host-name' }],
    30_000,
  );
  const synced = answer.includes(`"return": ${id}`) || answer.includes(`"return":${id}`);
  const pretty = /"pretty-name":\s*"([^"]*)"/.exec(answer)?.[1];
  const hostName = /"host-name":\s*"([^"]*)"/.exec(answer)?.[1];
  return {
    ok: synced && pretty !== undefined,
    detail: synced ? `guest-sync ok, os ${pretty ?? '(no osinfo)'}, host-name ${hostName ?? '(none)'}` : `no answer (${answer.slice(0, 120) || 'nothing'})`,
    ...(hostName === undefined ? {} : { hostName }),
  };
}

async function guestAgentShutdown(socketPath: string): Promise<void> {
  await qga(socketPath, [{ execute: 'guest-shutdown', arguments: { mode: 'powerdown' } }], 3000);
}

// ---------------------------------------------------------------------------------------

async function main(): Promise<void> {
  await checkTools();
  say(`tools ok; work directory ${WORK}`);
  await mkdir(WORK, { recursive: true });
  if (process.env.E2E_BOOT_IMAGE) {
    // Debugging aid: only the boot check, on a given qcow2.
    await bootCheck(resolve(process.env.E2E_BOOT_IMAGE));
    say(`PASS (boot check only) in ${seconds(Date.now() - started)}`);
    return;
  }
  const publishDir = join(WORK, 'publish');
  await mkdir(publishDir, { recursive: true });

  let github: GitHubSide | undefined;
  if (process.env.E2E_SKIP_GITHUB === '1') {
    say('E2E_SKIP_GITHUB=1: no upload, no images download; booting the published image');
  } else {
    const started = await startGitHub();
    if (typeof started === 'string') say(`skipping upload and images download: ${started}`);
    else github = started;
  }

  try {
    const env: Record<string, string> = { PIPELINE_PUBLISH_DIR: publishDir, CI: '1' };
    const targets = [`${IMAGE}:publish`];
    if (github) {
      Object.assign(env, {
        GITHUB_API_URL: github.apiUrl,
        GITHUB_REPOSITORY: REPOSITORY,
        GITHUB_TOKEN: github.token,
        PIPELINE_PART_SIZE: PART_SIZE,
        PIPELINE_MAX_ASSET_SIZE: PART_SIZE,
      });
      targets.push(`upload:${TAG}`);
    }

    const first = await pipelinePass('pass 1', targets, env);
    const second = await pipelinePass('pass 2', targets, env);
    const notFresh = second.nodes.filter((node) => node.status !== 'fresh');
    if (notFresh.length > 0) fail(`pass 2: not fresh: ${notFresh.map((node) => `${node.id} (${node.status}: ${node.reason ?? ''})`).join(', ')}`);
    say(`pass 2: all ${second.nodes.length} nodes fresh in ${seconds(second.wallMs)}`);

    const built = join(E2E, 'images', IMAGE, `${IMAGE}.qcow2`);
    const base = join(E2E, 'cache', 'debian-12-e2e-amd64.qcow2');
    const builtSha = (await readFile(`${built}.sha256`, 'utf8')).split(/\s+/)[0]!;
    say(`sizes: base ${mib(await sizeOf(base))}, built ${mib(await sizeOf(built))}, published ${mib(await sizeOf(join(publishDir, `${IMAGE}.img`)))}`);
    say(`versions: ${(await readFile(join(E2E, 'images', IMAGE, 'image-version.txt'), 'utf8')).trim().replace(/\n/g, ', ')}`);

    let bootImage = join(publishDir, `${IMAGE}.img`);
    if (github) {
      const assets = github.assets();
      say(`release ${TAG}: ${assets.map((asset) => `${asset.name} (${mib(asset.size)})`).join(', ')}`);
      const parts = assets.filter((asset) => /\.qcow2\.part[a-z]{2}$/.test(asset.name));
      if (parts.length < 2) fail(`expected ${IMAGE}.qcow2 split into parts on the release, found ${assets.map((asset) => asset.name).join(', ')}`);
      await github.save();

      const downloadDir = join(WORK, 'download');
      const consumerPublish = join(WORK, 'consumer-publish');
      await rm(downloadDir, { recursive: true, force: true });
      await rm(consumerPublish, { recursive: true, force: true });
      await mkdir(downloadDir, { recursive: true });
      await mkdir(consumerPublish, { recursive: true });
      // `--version=TAG`, not `--version TAG`: src/cli.ts takes a bare `--version` anywhere in
      // argv for the global flag (prints the package version, exit 0).
      const args = [BIN, '--config', CONFIG, 'images', 'download', IMAGE, `--version=${TAG}`, '--publish', '--dir', downloadDir];
      say(`pipeline images download ${IMAGE} --version=${TAG} --publish --dir ${downloadDir}`);
      const downloaded = await run(process.execPath, args, {
        env: { ...env, PIPELINE_PUBLISH_DIR: consumerPublish },
        timeoutMs: 600_000,
        echo: 'download',
        stopSignal: 'SIGINT',
      });
      if (downloaded.code !== 0) fail(`images download exited ${downloaded.code ?? downloaded.signal}: ${tail(downloaded.stderr + downloaded.stdout, 10)}`);
      for (const line of downloaded.stdout.trim().split('\n')) if (line) process.stderr.write(`  download | ${line}\n`);
      say(`images download: ${seconds(downloaded.ms)}`);
      const file = join(downloadDir, `${IMAGE}.qcow2`);
      if (!existsSync(file)) fail(`images download exited 0 but wrote no ${file}: ${tail(downloaded.stdout + downloaded.stderr, 5)}`);
      const got = await sha256(file);
      if (got !== builtSha) fail(`downloaded ${file} has SHA-256 ${got}, the built image ${builtSha}`);
      say(`downloaded image equals the built one (sha256 ${builtSha.slice(0, 16)}…); listing: ${(await readdir(downloadDir)).join(', ')}`);
      bootImage = join(consumerPublish, `${IMAGE}.img`);
      if (!existsSync(bootImage)) fail(`images download --publish left no ${bootImage}`);
    }

    await bootCheck(bootImage);
    const ran = first.nodes.filter((node) => node.status === 'ran').map((node) => node.id);
    say(`PASS in ${seconds(Date.now() - started)} (pass 1 ran: ${ran.join(', ') || 'nothing'})`);
  } finally {
    await github?.close();
  }
}

function stopAll(): void {
  for (const child of children) killGroup(child, 'SIGINT');
  setTimeout(() => {
    for (const child of children) killGroup(child, 'SIGKILL');
    process.exit(130);
  }, 15_000).unref();
}

process.on('SIGINT', stopAll);
process.on('SIGTERM', stopAll);

try {
  await main();
  process.exit(0);
} catch (error) {
  for (const child of children) killGroup(child, 'SIGKILL');
  if (error instanceof E2eFailure) {
    process.stderr.write(`e2e: FAIL: ${error.message}\n`);
  } else {
    process.stderr.write(`e2e: FAIL: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  }
  process.exit(1);
}
