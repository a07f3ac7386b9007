// The cleanup scripts in a chroot (issue 26): what a pve-9 build leaves behind, and what
// templates/pve-9/cleanup.sh and shared/scripts/cleanup-common.sh make of it, on a real
// Debian 13 root filesystem with the real packages.
//
//   node --import=tsx test/e2e/cleanup-chroot.ts        (npm run e2e:cleanup, as root)
//
// 1. mmdebstrap bootstraps trixie (pve-9's base) with cloud-init, openssh-server,
//    open-iscsi and postfix, installed under the build VM's hostname with the postfix
//    answers the template gives, so the packages write the build's names as they do in
//    the build. Downloaded packages are kept in test/e2e/cache/debs/ for the next run.
// 2. The rest of what a build leaves is planted where it lives: the Proxmox identity that
//    pve-cluster's first start makes (pmxcfs's database and its backup, the files a mounted
//    /etc/pve would show, root's key pair and the links into /etc/pve), cloud-init's
//    instance, the build user's key, journals, a DHCP lease, history and temp files. No
//    Proxmox package is installed: its repository is not reachable here.
// 3. Both scripts run in the chroot as root, the order packer runs them in, with /proc
//    mounted in a private mount namespace and the build VM's hostname in its own UTS
//    namespace. The scripts see a chroot, not a booted system.
// 4. Checks: what is gone, what is reset, that no file under /etc names the build VM any
//    more, which units regenerate what on a clone's first boot; then the regeneration
//    itself where it runs without booting: iscsid's startup check writes a new
//    InitiatorName, and pipeline-pve-identity (in a network namespace with a veth address
//    and a default route, after cloud-init's manage_etc_hosts rewrite) maps the clone's
//    name to that address, writes its mailname, aliases database and a new snakeoil key,
//    and stays at one line on the next boot.
//
// Environment: E2E_WORK (default $TMPDIR/pipeline-e2e; the root is made in
// E2E_WORK/cleanup-chroot and removed afterwards), MIRROR (default http://deb.debian.org/debian),
// E2E_KEEP_CHROOT=1 keeps the root for a look.
import { spawn } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const E2E = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(E2E, '..', '..');
const WORK = resolve(process.env.E2E_WORK || join(tmpdir(), 'pipeline-e2e'));
const MIRROR = process.env.MIRROR || 'http://deb.debian.org/debian';
const DEB_CACHE = join(E2E, 'cache', 'debs');
const SUITE = 'trixie';
const BUILD_HOST = 'pipeline-build';
const PACKAGES = ['systemd', 'openssh-server', 'cloud-init', 'iproute2', 'open-iscsi', 'postfix', 'ssl-cert'];
// What templates/pve-9/template.pkr.hcl answers before installing postfix.
const POSTFIX_ANSWERS = ['postfix postfix/main_mailer_type select Local only', `postfix postfix/mailname string ${BUILD_HOST}.localdomain`];

const started = Date.now();

function say(line: string): void {
  process.stderr.write(`[cleanup-chroot ${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${line}\n`);
}

class ChrootFailure extends Error {}

interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a program (argument array, no shell string) and collects its output. */
function run(file: string, args: readonly string[], options: { input?: string; echo?: string } = {}): Promise<Ran> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', (error) => reject(new ChrootFailure(`cannot run ${file}: ${error.message}`)));
    child.on('close', (code) => {
      if (options.echo) {
        for (const line of `${stdout}${stderr}`.trimEnd().split('\n')) if (line) process.stderr.write(`  ${options.echo} | ${line}\n`);
      }
      resolvePromise({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

async function mustRun(file: string, args: readonly string[], options: { input?: string; echo?: string } = {}): Promise<Ran> {
  const result = await run(file, args, options);
  if (result.code !== 0) {
    throw new ChrootFailure(
      `${file} ${args.join(' ')} exited ${result.code}:\n${`${result.stdout}${result.stderr}`.trimEnd().split('\n').slice(-25).join('\n')}`,
    );
  }
  return result;
}

async function onPath(program: string): Promise<boolean> {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin']) {
    if (dir && (await lstat(join(dir, program)).catch(() => undefined))) return true;
  }
  return false;
}

async function exists(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined)) !== undefined;
}

async function plant(root: string, files: Record<string, string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
}

/**
 * Runs a shell script as root in a private mount namespace (and UTS, and optionally
 * network, namespace): the script mounts /proc and /dev into the chroot, which the
 * namespace takes away again when it ends, whatever happens.
 */
function inNamespaces(script: string, args: readonly string[], options: { net?: boolean; echo?: string } = {}): Promise<Ran> {
  const flags = ['--mount', '--uts', '--fork', ...(options.net ? ['--net'] : [])];
  return mustRun('unshare', [...flags, 'sh', '-euc', script, 'sh', ...args], options.echo ? { echo: options.echo } : {});
}

const MOUNTS = 'mount --make-rprivate / && mount -t proc proc "$root/proc" && mount --bind /dev "$root/dev"';

// ---------------------------------------------------------------------------------------

async function bootstrap(root: string): Promise<void> {
  await mkdir(DEB_CACHE, { recursive: true });
  // Before the packages: the build VM's name (cloud-init set it from meta-data) and the
  // template's answers for postfix.
  const beforePackages = [
    `echo ${BUILD_HOST} > "$1/etc/hostname"`,
    ...POSTFIX_ANSWERS.map((line) => `echo '${line}' | chroot "$1" debconf-set-selections`),
  ].join(' && ');
  const args = [
    '--quiet',
    '--variant=minbase',
    `--include=${PACKAGES.join(',')}`,
    `--setup-hook=mkdir -p "$1/var/cache/apt/archives/"`,
    `--setup-hook=sync-in ${DEB_CACHE} /var/cache/apt/archives/`,
    `--essential-hook=${beforePackages}`,
    // Only the time it takes: no fsync per file, no documentation unpacked.
    '--dpkgopt=force-unsafe-io',
    '--dpkgopt=path-exclude=/usr/share/man/*',
    '--dpkgopt=path-exclude=/usr/share/doc/*',
    '--dpkgopt=path-exclude=/usr/share/locale/*',
    // The cache keeps what this run used: versions the mirror no longer has go first.
    '--customize-hook=chroot "$1" apt-get autoclean',
    `--customize-hook=find ${DEB_CACHE} -name '*.deb' -delete`,
    `--customize-hook=sync-out /var/cache/apt/archives ${DEB_CACHE}`,
    SUITE,
    root,
    MIRROR,
  ];
  const cached = (await readdir(DEB_CACHE)).filter((name) => name.endsWith('.deb')).length;
  say(`mmdebstrap ${SUITE} (${PACKAGES.join(', ')}) under hostname ${BUILD_HOST}; ${cached} packages in ${DEB_CACHE}`);
  const begin = Date.now();
  // The packages' maintainer scripts read the hostname (postfix's myhostname, ssl-cert's
  // snakeoil CN) as they do in the build VM.
  await mustRun('unshare', ['--uts', '--fork', 'sh', '-euc', 'hostname "$1"; shift; exec mmdebstrap "$@"', 'sh', BUILD_HOST, ...args], {
    echo: 'mmdebstrap',
  });
  say(`bootstrap: ${((Date.now() - begin) / 1000).toFixed(1)} s`);
}

/** What a pve-9 build leaves that the packages above did not write. */
async function plantBuildTraces(root: string): Promise<void> {
  await plant(root, {
    'etc/hostname': `${BUILD_HOST}\n`,
    'etc/machine-id': '0123456789abcdef0123456789abcdef\n',
    // cloud-init's hosts.debian.tmpl for the build, then the template's pin_hostname line.
    'etc/hosts': `127.0.1.1 ${BUILD_HOST}.localdomain ${BUILD_HOST}\n127.0.0.1 localhost\n\n::1 localhost ip6-localhost ip6-loopback\n10.0.2.15 ${BUILD_HOST}.localdomain ${BUILD_HOST} # pipeline-build\n`,
    'etc/pve-packages-preinstalled': 'proxmox-ve postfix open-iscsi chrony installed by templates/pve-9\n',
    'etc/apt/sources.list.d/pve-install-repo.sources':
      'Types: deb\nURIs: http://download.proxmox.com/debian/pve\nSuites: trixie\nComponents: pve-no-subscription\n',
    'etc/apt/sources.list.d/pve-enterprise.sources':
      'Types: deb\nURIs: https://enterprise.proxmox.com/debian/pve\nSuites: trixie\nComponents: pve-enterprise\n',
    'etc/apt/sources.list.d/ceph.sources': 'Types: deb\nURIs: https://enterprise.proxmox.com/debian/ceph-squid\n',
    // pmxcfs's database (the content of /etc/pve) and pve-cluster's backup of it.
    'var/lib/pve-cluster/config.db': 'SQLite format 3\0 (planted: holds priv/pve-root-ca.key, priv/authkey.key, pve-www.key, …)',
    'var/lib/pve-cluster/config.db-wal': 'wal',
    'var/lib/pve-cluster/backup/config-1760000000.sql.gz': 'backup of config.db',
    'var/lib/pve-cluster/.pmxcfs.lockfile': '',
    // What /etc/pve shows while pmxcfs is mounted, left in the directory under the mount point.
    'etc/pve/priv/pve-root-ca.key': '-----BEGIN PRIVATE KEY----- build CA',
    'etc/pve/priv/authkey.key': '-----BEGIN PRIVATE KEY----- build auth key',
    'etc/pve/priv/authorized_keys': 'ssh-rsa AAAA root@pipeline-build\nno-port-forwarding ssh-ed25519 AAAA pipeline-build-pve-9\n',
    'etc/pve/priv/known_hosts': `${BUILD_HOST} ssh-rsa AAAA\n`,
    'etc/pve/pve-root-ca.pem': '-----BEGIN CERTIFICATE----- build CA',
    'etc/pve/pve-www.key': '-----BEGIN PRIVATE KEY----- build www key',
    'etc/pve/authkey.pub': '-----BEGIN PUBLIC KEY----- build auth key',
    [`etc/pve/nodes/${BUILD_HOST}/pve-ssl.key`]: '-----BEGIN PRIVATE KEY----- build node',
    [`etc/pve/nodes/${BUILD_HOST}/pve-ssl.pem`]: '-----BEGIN CERTIFICATE----- build node',
    'root/.ssh/id_rsa': '-----BEGIN OPENSSH PRIVATE KEY----- root@pipeline-build',
    'root/.ssh/id_rsa.pub': 'ssh-rsa AAAA root@pipeline-build\n',
    'root/.ssh/known_hosts': `${BUILD_HOST} ssh-ed25519 AAAA\n`,
    'root/.ssh/config': '# pvecm updatecerts\nCiphers aes128-ctr,aes192-ctr,aes256-ctr\n',
    [`var/lib/rrdcached/db/pve-node-9.0/${BUILD_HOST}`]: 'rrd',
    [`var/lib/rrdcached/db/pve2-node/${BUILD_HOST}`]: 'rrd',
    // cloud-init's run for the build: its instance, its seed and what ssh_pwauth wrote.
    'var/lib/cloud/instances/pipeline-build/boot-finished': '',
    'var/lib/cloud/data/instance-id': 'pipeline-build\n',
    'var/lib/cloud/seed/nocloud/meta-data': `instance-id: pipeline-build\nlocal-hostname: ${BUILD_HOST}\n`,
    'etc/ssh/sshd_config.d/50-cloud-init.conf': 'PasswordAuthentication no\n',
    'home/debian/.ssh/authorized_keys': 'ssh-ed25519 AAAA pipeline-build-pve-9\n',
    'home/debian/.bash_history': 'sudo -i\n',
    'root/.bash_history': 'apt-get install proxmox-ve\n',
    'tmp/script_1234.sh': 'echo provisioning\n',
    'var/tmp/leftover': 'x',
    'var/lib/dhcp/dhclient.ens18.leases': 'lease { fixed-address 10.0.2.15; }\n',
    'var/log/journal/0123456789abcdef0123456789abcdef/system.journal': 'LPKSHHRH (planted)',
    'var/log/journal/0123456789abcdef0123456789abcdef/system@0123-0001.journal~': 'LPKSHHRH (planted)',
    'var/log/cloud-init.log': 'cloud-init ran for pipeline-build\n',
    'var/log/pveproxy/access.log': '::ffff:10.0.2.2 - root@pam GET /\n',
    'var/log/pveproxy/access.log.1': 'older\n',
  });
  await symlink('/var/lib/cloud/instances/pipeline-build', join(root, 'var/lib/cloud/instance'));
  // pvecm updatecerts links root's authorized_keys and the system known_hosts into /etc/pve.
  await symlink('/etc/pve/priv/authorized_keys', join(root, 'root/.ssh/authorized_keys'));
  await rm(join(root, 'etc/ssh/ssh_known_hosts'), { force: true });
  await symlink('/etc/pve/priv/known_hosts', join(root, 'etc/ssh/ssh_known_hosts'));
  await symlink(`nodes/${BUILD_HOST}`, join(root, 'etc/pve/local'));
}

/** Files under dir (not following links) whose content mentions needle. */
async function filesMentioning(dir: string, needle: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await filesMentioning(path, needle)));
    else if (entry.isFile() && (await readFile(path)).includes(needle)) found.push(path);
  }
  return found;
}

/** Refuses to remove a tree something is still mounted in (the namespaces should have taken their mounts along). */
async function removeRoot(root: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((line) => line.split(' ')[4]?.startsWith(`${root}/`));
  if (mounts.length > 0) throw new ChrootFailure(`not removing ${root}: still mounted there: ${mounts.join('; ')}`);
  await rm(root, { recursive: true, force: true });
}

interface Check {
  readonly what: string;
  readonly ok: boolean;
  readonly detail?: string;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new ChrootFailure('run as root: mmdebstrap, chroot and the namespaces need it');
  for (const [program, pkg] of [
    ['mmdebstrap', 'mmdebstrap'],
    ['unshare', 'util-linux'],
    ['chroot', 'coreutils'],
  ] as const) {
    if (!(await onPath(program))) throw new ChrootFailure(`missing ${program}: apt-get install ${pkg} (or sh scripts/e2e-deps.sh)`);
  }
  const root = join(WORK, 'cleanup-chroot');
  await removeRoot(root);
  await mkdir(WORK, { recursive: true });
  try {
    await bootstrap(root);
    await plantBuildTraces(root);
    const before = {
      initiator: await readFile(join(root, 'etc/iscsi/initiatorname.iscsi'), 'utf8'),
      snakeoil: await readFile(join(root, 'etc/ssl/private/ssl-cert-snakeoil.key'), 'utf8'),
      mainCf: await readFile(join(root, 'etc/postfix/main.cf'), 'utf8'),
      hostKeys: (await readdir(join(root, 'etc/ssh'))).filter((name) => name.startsWith('ssh_host_')),
    };
    say(`planted; the install wrote: ${before.initiator.match(/^InitiatorName=.*$/m)?.[0]}, ${before.hostKeys.length} SSH host key files,`);
    say(
      `  postfix ${before.mainCf.match(/^myhostname = .*$/m)?.[0] ?? '(no myhostname)'}, /etc/mailname ${await readFile(
        join(root, 'etc/mailname'),
        'utf8',
      ).then(
        (text) => text.trim(),
        () => 'absent',
      )}`,
    );

    // --- Both scripts, in the chroot, as packer runs them (copied to /tmp, run as root) ---
    const begin = Date.now();
    await writeFile(join(root, 'tmp/cleanup.sh'), await readFile(join(REPO, 'templates/pve-9/cleanup.sh')));
    await writeFile(join(root, 'tmp/cleanup-common.sh'), await readFile(join(REPO, 'shared/scripts/cleanup-common.sh')));
    const cleanup = await inNamespaces(
      `root=$1; hostname "$2"; ${MOUNTS}; chroot "$root" env DEBIAN_FRONTEND=noninteractive sh /tmp/cleanup.sh && chroot "$root" env DEBIAN_FRONTEND=noninteractive sh /tmp/cleanup-common.sh`,
      [root, BUILD_HOST],
      { echo: 'cleanup' },
    );
    const cleanupSeconds = (Date.now() - begin) / 1000;
    say(`cleanup scripts: ${cleanupSeconds.toFixed(1)} s`);

    const read = (path: string): Promise<string> => readFile(join(root, path), 'utf8');
    const gone = async (path: string): Promise<Check> => ({ what: `${path} is gone`, ok: !(await exists(join(root, path))) });
    const checks: Check[] = [];
    const check = (what: string, ok: boolean, detail?: string): void => {
      checks.push({ what, ok, ...(detail === undefined ? {} : { detail }) });
    };

    check('the scripts saw a chroot, not a booted system', /not booted \(chroot\): no fstrim/.test(cleanup.stdout), cleanup.stdout.split('\n')[0]);
    // Gone: the build's identity and traces.
    for (const path of [
      'var/lib/pve-cluster/config.db',
      'var/lib/pve-cluster/config.db-wal',
      'var/lib/pve-cluster/backup',
      'var/lib/pve-cluster/.pmxcfs.lockfile',
      'etc/pve/priv',
      'etc/pve/nodes',
      'etc/pve/local',
      'etc/pve/pve-www.key',
      'root/.ssh/id_rsa',
      'root/.ssh/id_rsa.pub',
      'root/.ssh/authorized_keys',
      'root/.ssh/known_hosts',
      'etc/ssh/ssh_known_hosts',
      `var/lib/rrdcached/db/pve-node-9.0`,
      `var/lib/rrdcached/db/pve2-node`,
      'etc/apt/sources.list.d/pve-enterprise.sources',
      'etc/apt/sources.list.d/ceph.sources',
      'etc/mailname',
      'etc/aliases.db',
      'etc/ssl/private/ssl-cert-snakeoil.key',
      'etc/ssl/certs/ssl-cert-snakeoil.pem',
      'var/lib/cloud/instances/pipeline-build',
      'var/lib/cloud/instance',
      'var/lib/cloud/seed/nocloud',
      'etc/ssh/sshd_config.d/50-cloud-init.conf',
      'home/debian/.ssh/authorized_keys',
      'home/debian/.bash_history',
      'root/.bash_history',
      'var/lib/dhcp/dhclient.ens18.leases',
      'var/log/journal/0123456789abcdef0123456789abcdef/system.journal',
      'var/log/journal/0123456789abcdef0123456789abcdef/system@0123-0001.journal~',
      'var/log/pveproxy/access.log.1',
      'var/tmp/leftover',
    ]) {
      checks.push(await gone(path));
    }
    const hostKeys = (await readdir(join(root, 'etc/ssh'))).filter((name) => name.startsWith('ssh_host_'));
    check('no SSH host keys', hostKeys.length === 0, hostKeys.join(' '));
    check('/tmp is empty', (await readdir(join(root, 'tmp'))).length === 0);
    check('/etc/pve stays, empty, as the mount point', (await readdir(join(root, 'etc/pve'))).length === 0);
    check(
      'apt lists and package cache are empty',
      (await readdir(join(root, 'var/lib/apt/lists'))).filter((name) => name !== 'partial' && name !== 'lock').length === 0,
    );
    check('pve-install-repo.sources (no-subscription) stays', await exists(join(root, 'etc/apt/sources.list.d/pve-install-repo.sources')));
    check("root's ssh config (not an identity) stays", await exists(join(root, 'root/.ssh/config')));
    // Reset.
    check('/etc/machine-id is empty', (await read('etc/machine-id')) === '');
    check('/etc/hostname is localhost', (await read('etc/hostname')) === 'localhost\n');
    const hosts = await read('etc/hosts');
    check('/etc/hosts has no build name', !hosts.includes(BUILD_HOST) && /^127\.0\.0\.1 localhost$/m.test(hosts), JSON.stringify(hosts));
    const mainCf = await read('etc/postfix/main.cf');
    check('postfix main.cf has no myhostname and no build name', !/^myhostname\s*=/m.test(mainCf) && !mainCf.includes(BUILD_HOST));
    check('postfix mydestination follows $myhostname', /^mydestination = \$myhostname(, [^,\n]+)*$/m.test(mainCf), mainCf.match(/^mydestination.*$/m)?.[0]);
    const initiator = await read('etc/iscsi/initiatorname.iscsi');
    check('iSCSI: GenerateName=yes, no InitiatorName', /^GenerateName=yes$/m.test(initiator) && !/^InitiatorName=/m.test(initiator));
    check('/var/log/cloud-init.log is emptied or gone', !(await exists(join(root, 'var/log/cloud-init.log'))) || (await read('var/log/cloud-init.log')) === '');
    check('/var/log/pveproxy/access.log is emptied', (await read('var/log/pveproxy/access.log')) === '');
    const mentions = await filesMentioning(join(root, 'etc'), BUILD_HOST);
    check(`no file under /etc names ${BUILD_HOST}`, mentions.length === 0, mentions.map((path) => path.slice(root.length)).join(' '));
    // Regenerated on a clone's boot: the units that do it are enabled.
    const wants = async (target: string, unit: string): Promise<boolean> => exists(join(root, 'etc/systemd/system', `${target}.wants`, unit));
    check(
      'pipeline-pve-identity.service enabled (multi-user.target)',
      (await readlink(join(root, 'etc/systemd/system/multi-user.target.wants/pipeline-pve-identity.service')).catch(() => '')) ===
        '/etc/systemd/system/pipeline-pve-identity.service',
    );
    check('iscsid.socket enabled (its startup check generates the InitiatorName)', await wants('sockets.target', 'iscsid.socket'));
    check('cloud-init enabled (new instance: hostname, users, keys)', await wants('cloud-init.target', 'cloud-init-local.service'));
    check('sshd-keygen enabled (host keys)', await wants('ssh.service', 'sshd-keygen.service'));
    const unitCheck = await run('chroot', [root, 'systemd-analyze', 'verify', '--man=no', '/etc/systemd/system/pipeline-pve-identity.service']);
    check(
      'systemd-analyze verify accepts pipeline-pve-identity.service',
      unitCheck.code === 0,
      `${unitCheck.stdout}${unitCheck.stderr}`.trim().split('\n').slice(-3).join(' | '),
    );

    // --- Regeneration that runs without booting ----------------------------------------
    await mustRun('chroot', [root, '/usr/lib/open-iscsi/startup-checks.sh']);
    const regenerated = await read('etc/iscsi/initiatorname.iscsi');
    const newName = regenerated.match(/^InitiatorName=(\S+)$/m)?.[1];
    check(
      "iscsid's startup check writes a new InitiatorName",
      newName !== undefined && !before.initiator.includes(newName) && !/^GenerateName=/m.test(regenerated),
      newName,
    );

    // A clone's boot: cloud-init's manage_etc_hosts wrote its template for the clone's
    // name, then pipeline-pve-identity runs (before pve-cluster). Twice: the second boot
    // rewrites /etc/hosts again and must end with one line still.
    const cloneHosts = '127.0.1.1 clone-a.example.net clone-a\n127.0.0.1 localhost\n\n::1 localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\n';
    const boot = `root=$1; hostname clone-a; ${MOUNTS}
      ip link set lo up
      ip link add veth0 type veth peer name veth1
      ip addr add 192.0.2.10/24 dev veth0
      ip link set veth0 up; ip link set veth1 up
      ip route add default via 192.0.2.1
      for boot in 1 2; do
        printf '%s' "$2" > "$root/etc/hosts"
        chroot "$root" /usr/local/sbin/pipeline-pve-identity
      done
      chroot "$root" getent ahostsv4 clone-a | head -n 1`;
    const identity = await inNamespaces(boot, [root, cloneHosts], { net: true, echo: 'identity' });
    const pinnedHosts = await read('etc/hosts');
    const pinLines = pinnedHosts.split('\n').filter((line) => line.includes('# pipeline-pve-identity'));
    check(
      'pipeline-pve-identity maps clone-a to its primary address (one line after two boots)',
      pinLines.length === 1 && pinLines[0] === '192.0.2.10 clone-a.example.net clone-a # pipeline-pve-identity',
      pinLines.join(' / '),
    );
    check('no loopback line names clone-a any more', !/^127\.\S*\s.*\bclone-a\b/m.test(pinnedHosts) && /^127\.0\.0\.1 localhost$/m.test(pinnedHosts));
    const resolved = identity.stdout.trim().split('\n').at(-1) ?? '';
    check('clone-a resolves to 192.0.2.10 (what pmxcfs asks)', resolved.startsWith('192.0.2.10 '), resolved);
    check("/etc/mailname is the clone's FQDN", (await read('etc/mailname').catch(() => '')) === 'clone-a.example.net\n');
    const aliases = await readFile(join(root, 'etc/aliases.db')).catch(() => Buffer.alloc(0));
    check("/etc/aliases.db is built again, under the clone's name", aliases.includes('clone-a') && !aliases.includes(BUILD_HOST));
    const snakeoil = await read('etc/ssl/private/ssl-cert-snakeoil.key').catch(() => '');
    check('a new snakeoil key, not the build one', snakeoil.includes('PRIVATE KEY') && snakeoil !== before.snakeoil);

    let failed = 0;
    for (const { what, ok, detail } of checks) {
      if (!ok) failed++;
      say(`  ${ok ? 'ok  ' : 'FAIL'} ${what}${!ok && detail ? `: ${detail}` : ''}`);
    }
    if (failed > 0) throw new ChrootFailure(`${failed} of ${checks.length} checks failed`);
    say(`PASS: ${checks.length} checks in ${((Date.now() - started) / 1000).toFixed(1)} s (cleanup scripts ${cleanupSeconds.toFixed(1)} s)`);
  } finally {
    if (process.env.E2E_KEEP_CHROOT === '1') say(`kept ${root}`);
    else await removeRoot(root);
  }
}

try {
  await main();
  process.exit(0);
} catch (error) {
  process.stderr.write(
    `cleanup-chroot: FAIL: ${error instanceof ChrootFailure ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
}
