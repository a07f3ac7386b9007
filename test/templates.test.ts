// The templates and the build task agree on one variable contract (packer 1.6.6 rejects a
// -var the template does not declare; every version rejects a missing variable without a
// default), and the production templates do what the spec asks of them.
import { execFile as execFileCallback } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readFile, readlink, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse } from '@cdktf/hcl2json';
import test from 'ava';
import { TEMPLATE_VARIABLES } from '../tasks/build.ts';
import { templateHash, templateKeyFiles } from '../tasks/cache-key.ts';

const execFile = promisify(execFileCallback);
const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const names = ['debian-12', 'debian-13', 'pve-9'];
const production = names.map((name) => `templates/${name}`);
const demo = names.map((name) => `demo/templates/${name}`);

interface ParsedTemplate {
  variable?: Record<string, Array<{ default?: unknown; type?: string }>>;
  packer?: Array<{ required_plugins?: Array<Record<string, { source?: string; version?: string }>> }>;
  source?: Record<string, Record<string, Array<Record<string, unknown>>>>;
  build?: Array<Record<string, unknown>>;
}

const loaded = new Map<string, Promise<{ text: string; json: ParsedTemplate }>>();

/** A template's text and its parse, once per directory (parsing is the slow part). */
function load(dir: string): Promise<{ text: string; json: ParsedTemplate }> {
  let template = loaded.get(dir);
  if (!template) {
    template = readFile(join(repo, dir, 'template.pkr.hcl'), 'utf8').then(async (text) => ({
      text,
      json: (await parse(`${dir}/template.pkr.hcl`, text)) as ParsedTemplate,
    }));
    loaded.set(dir, template);
  }
  return template;
}

for (const dir of [...production, ...demo]) {
  test(`${dir} declares the build task's variables, and needs no others`, async (t) => {
    const { json } = await load(dir);
    const declared = json.variable ?? {};
    for (const name of TEMPLATE_VARIABLES) t.truthy(declared[name], `${dir} does not declare ${name}`);
    for (const [name, [block]] of Object.entries(declared)) {
      if (block && !('default' in block)) {
        t.true((TEMPLATE_VARIABLES as readonly string[]).includes(name), `${dir}: ${name} has no default and the build task does not pass it`);
      }
    }
    t.is(declared.accelerator?.[0]?.default, 'kvm');
  });

  test(`${dir} has a cleanup.sh that parses`, async (t) => {
    await t.notThrowsAsync(execFile('sh', ['-n', join(repo, dir, 'cleanup.sh')]));
  });
}

interface ShellProvisioner {
  inline?: string[] | string;
  pause_before?: string;
  start_retry_timeout?: string;
  expect_disconnect?: boolean;
}

/** The build's shell provisioners as written (an inline built with concat() stays its expression text). */
function shellProvisioners(json: ParsedTemplate): ShellProvisioner[] {
  const provisioners = (json.build?.[0]?.provisioner ?? {}) as { shell?: ShellProvisioner[] };
  return provisioners.shell ?? [];
}

function inlineText(provisioner: ShellProvisioner): string {
  return Array.isArray(provisioner.inline) ? provisioner.inline.join('\n') : (provisioner.inline ?? '');
}

for (const dir of production) {
  test(`${dir} boots the base image with the qemu plugin and seeds cloud-init`, async (t) => {
    const { json, text } = await load(dir);
    const plugins = json.packer?.[0]?.required_plugins?.[0];
    t.is(plugins?.qemu?.source, 'github.com/hashicorp/qemu');
    // Pessimistic: any 1.x from 1.1, never a 2.x with other builder options.
    t.is(plugins?.qemu?.version, '~> 1.1');
    const qemu = Object.values(json.source?.qemu ?? {})[0]?.[0];
    t.truthy(qemu, 'no qemu source');
    t.is(qemu?.disk_image, true);
    t.is(qemu?.iso_url, '${var.base_image}');
    t.is(qemu?.iso_checksum, '${var.base_checksum}');
    t.is(qemu?.output_directory, '${var.output_directory}');
    t.is(qemu?.vm_name, '${var.image_name}.qcow2');
    t.is(qemu?.accelerator, '${var.accelerator}');
    t.is(qemu?.cd_label, 'cidata');
    t.is(qemu?.ssh_private_key_file, '${var.ssh_private_key_file}');
    t.regex(text, /user-data\.pkrtpl", \{ ssh_public_key = var\.ssh_public_key \}/);
    t.regex(text, /install qemu-guest-agent/);
    t.regex(text, /detect-versions\.sh \/tmp\/image-version\.txt/);
    t.regex(text, /direction\s*= "download"[\s\S]*image-version\.txt/);
    t.regex(text, /\$\{path\.root\}\/cleanup\.sh",\s*"\$\{var\.shared_dir\}\/scripts\/cleanup-common\.sh"/);
  });

  test(`${dir} leaves compression to the build task and gives TCG time to power off`, async (t) => {
    const { json } = await load(dir);
    const qemu = Object.values(json.source?.qemu ?? {})[0]?.[0];
    t.is(qemu?.skip_compaction, true);
    t.is(qemu?.shutdown_timeout, '${local.slow_timeout}');
    const locals = Object.assign({}, ...((json as { locals?: object[] }).locals ?? [])) as Record<string, unknown>;
    t.regex(String(locals.slow_timeout), /^\$\{var\.accelerator == "tcg" \? "(\d+)m" : "(\d+)m"\}$/);
    const [, emulated, native] = /"(\d+)m" : "(\d+)m"/.exec(String(locals.slow_timeout)) ?? [];
    t.true(Number(emulated) > Number(native), 'TCG gets the longer timeout');
    t.true(Number(native) > 5, "longer than packer's 5-minute default");
  });

  test(`${dir} upgrades with new packages and waits for apt's locks`, async (t) => {
    const { json, text } = await load(dir);
    const locals = Object.assign({}, ...((json as { locals?: object[] }).locals ?? [])) as Record<string, unknown>;
    t.regex(String(locals.apt_get), /^apt-get -o DPkg::Lock::Timeout=[1-9]\d* /);
    t.deepEqual(locals.wait_for_apt, [
      'systemctl stop apt-daily.timer apt-daily-upgrade.timer',
      "while systemctl is-active --quiet apt-daily.service apt-daily-upgrade.service; do echo 'waiting for apt-daily'; sleep 5; done",
    ]);
    // Every apt-get that takes dpkg's lock goes through local.apt_get.
    const dpkgOperations = text
      .split('\n')
      .filter((line) => /(apt-get|\$\{local\.apt_get\}) .*\b(install|upgrade|full-upgrade|remove|autoremove)\b/.test(line));
    t.true(dpkgOperations.length >= 2);
    for (const line of dpkgOperations) t.regex(line, /\$\{local\.apt_get\}/, line.trim());
    t.regex(text, /\$\{local\.apt_get\} -y --with-new-pkgs upgrade/);
    // The first `apt-get update` of the build (the lists lock has no timeout) comes after the wait.
    const firstUpdate = shellProvisioners(json).find((provisioner) => inlineText(provisioner).includes('apt-get update'));
    t.truthy(firstUpdate);
    t.regex(inlineText(firstUpdate ?? {}), /^\$\{concat\(local\.wait_for_apt, \[/);
  });
}

test('debian-12 and debian-13 share one template file, and each key covers it as cat reads it', async (t) => {
  const shared = await realpath(join(repo, 'shared/templates/debian.pkr.hcl'));
  for (const name of ['debian-12', 'debian-13']) {
    t.is(await readlink(join(repo, 'templates', name, 'template.pkr.hcl')), '../../shared/templates/debian.pkr.hcl');
    t.is(await realpath(join(repo, 'templates', name, 'template.pkr.hcl')), shared);
    // The shell build script keyed images with `cat <files> | sha256sum`, following the link.
    const files = templateKeyFiles({ name });
    const { stdout } = await execFile('sh', ['-c', 'cat "$@" | sha256sum', 'sh', ...files], { cwd: repo });
    t.is(await templateHash(repo, files), stdout.slice(0, 64));
  }
  t.not(await templateHash(repo, templateKeyFiles({ name: 'debian-12' })), await templateHash(repo, templateKeyFiles({ name: 'debian-13' })));
});

test('the cloud-init seed bakes no sshd setting into the image', async (t) => {
  const userData = await readFile(join(repo, 'shared/cloud-init/user-data.pkrtpl'), 'utf8');
  t.notRegex(userData, /^\s*ssh_pwauth\s*:/m);
  t.regex(userData, /^disable_root: true$/m);
});

test('pve-9 installs proxmox-ve from the no-subscription repository and leaves the marker', async (t) => {
  const { json } = await load('templates/pve-9');
  const build = JSON.stringify(json.build);
  t.regex(build, /install proxmox-ve postfix open-iscsi chrony/);
  t.regex(build, /pve-no-subscription/);
  t.regex(build, /Suites: trixie/);
  t.regex(build, /DEBIAN_FRONTEND=noninteractive/);
  t.regex(build, /postfix\/main_mailer_type/);
  t.regex(build, /> \/etc\/pve-packages-preinstalled/);
  for (const name of ['debian-12', 'debian-13']) {
    t.notRegex(JSON.stringify((await load(`templates/${name}`)).json.build), /proxmox/);
  }
});

test('pve-9 trusts the Proxmox archive key only when it matches the published SHA-256', async (t) => {
  const { json } = await load('templates/pve-9');
  const locals = Object.assign({}, ...((json as { locals?: object[] }).locals ?? [])) as Record<string, unknown>;
  // Published in the Proxmox VE admin guide (pve-docs pve-package-repos.adoc, SecureApt) for
  // proxmox-archive-keyring-trixie.gpg.
  t.is(locals.proxmox_keyring_sha256, '136673be77aba35dcce385b28737689ad64fd785a797e57897589aed08db6e45');
  t.is(locals.proxmox_keyring_url, 'https://enterprise.proxmox.com/debian/proxmox-archive-keyring-trixie.gpg');
  const lines = shellProvisioners(json).flatMap((provisioner) => inlineText(provisioner).split('\n'));
  const download = lines.findIndex((line) => line.includes('curl') && line.includes('${local.proxmox_keyring_url}'));
  const check = lines.findIndex((line) =>
    line.includes("echo '${local.proxmox_keyring_sha256}  /tmp/proxmox-archive-keyring.gpg' | sha256sum --check --strict"),
  );
  const install = lines.findIndex((line) => line.includes('install -m 0644 /tmp/proxmox-archive-keyring.gpg /usr/share/keyrings/proxmox-archive-keyring.gpg'));
  const update = lines.findIndex((line, index) => index > download && line.includes('apt-get update'));
  t.true(download >= 0 && download < check && check < install && install < update, `order: ${download} ${check} ${install} ${update}`);
  t.regex(lines[download] ?? '', /-o \/tmp\/proxmox-archive-keyring\.gpg/, 'downloaded beside, not into, the keyrings');
});

test('pve-9 waits long enough for the reboot into the Proxmox kernel', async (t) => {
  const { json } = await load('templates/pve-9');
  const shells = shellProvisioners(json);
  const reboot = shells.findIndex((provisioner) => provisioner.expect_disconnect === true);
  t.true(reboot >= 0);
  t.is(shells[reboot + 1]?.start_retry_timeout, '${local.slow_timeout}');
});

test('the demo templates use only what packer 1.6.6 runs: the null source and shell-local', async (t) => {
  for (const dir of demo) {
    const { json, text } = await load(dir);
    t.falsy(json.packer, `${dir} has a packer block`);
    t.deepEqual(Object.keys(json.source ?? {}), ['null']);
    t.regex(text, /detect-versions\.sh/);
    t.regex(text, /cleanup-common\.sh/);
  }
});

test('shared scripts parse as POSIX sh', async (t) => {
  for (const script of ['cleanup-common.sh', 'detect-versions.sh']) {
    await t.notThrowsAsync(execFile('sh', ['-n', join(repo, 'shared/scripts', script)]));
  }
});

test('detect-versions.sh reads the point releases of a root', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'detect-versions-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const script = join(repo, 'shared/scripts/detect-versions.sh');
  await mkdir(join(root, 'etc'), { recursive: true });
  await writeFile(join(root, 'etc/debian_version'), '12.13\n');
  t.is((await execFile('sh', [script, '--root', root])).stdout, 'DEBIAN_VERSION=12.13\nPVE_VERSION=\n');

  await mkdir(join(root, 'var/lib/dpkg'), { recursive: true });
  await writeFile(join(root, 'var/lib/dpkg/status'), 'Package: pve-manager\nStatus: install ok installed\nVersion: 9.1.4\nArchitecture: amd64\n\n');
  await execFile('sh', [script, '--root', root, join(root, 'image-version.txt')]);
  t.is(await readFile(join(root, 'image-version.txt'), 'utf8'), 'DEBIAN_VERSION=12.13\nPVE_VERSION=9.1\n');

  await rm(join(root, 'etc/debian_version'));
  await t.throwsAsync(execFile('sh', [script, '--root', root]), { message: /no Debian version/ });
});

/** Files under root, written with their parent directories. */
async function plant(root: string, files: Record<string, string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), content);
  }
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

test('cleanup-common.sh generalises a fake root without touching the host', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'cleanup-common-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await plant(root, {
    'etc/machine-id': '0123456789abcdef0123456789abcdef\n',
    'etc/hostname': 'pipeline-build\n',
    'etc/hosts': '127.0.0.1 localhost\n127.0.1.1 pipeline-build.localdomain pipeline-build\n# a comment naming pipeline-build\n::1 localhost ip6-localhost\n',
    'etc/ssh/ssh_host_ed25519_key': 'key',
    'etc/ssh/sshd_config.d/50-cloud-init.conf': 'PasswordAuthentication no\n',
    'etc/ssh/sshd_config.d/60-site.conf': 'X11Forwarding no\n',
    'home/debian/.ssh/authorized_keys': 'ssh-ed25519 AAAA build',
    'root/.bash_history': 'history',
    'tmp/leftover': 'x',
    'var/lib/dhcp/dhclient.ens3.leases': 'lease { fixed-address 10.0.2.15; }',
    'var/lib/systemd/credential.secret': 'secret',
    'var/log/syslog': 'log',
    'var/log/syslog.1': 'old log',
    'var/log/journal/0123456789abcdef0123456789abcdef/system.journal': 'LPKSHHRH',
  });
  const { stdout } = await execFile('sh', [join(repo, 'shared/scripts/cleanup-common.sh')], {
    env: { ...process.env, CLEANUP_ROOT: root },
  });
  t.regex(stdout, /would run: cloud-init clean/);
  t.regex(stdout, /would run: fstrim/);
  t.is(await readFile(join(root, 'etc/machine-id'), 'utf8'), '');
  t.is(await readFile(join(root, 'etc/hostname'), 'utf8'), 'localhost\n');
  t.is(await readFile(join(root, 'etc/hosts'), 'utf8'), '127.0.0.1 localhost\n# a comment naming pipeline-build\n::1 localhost ip6-localhost\n');
  t.is(await readFile(join(root, 'etc/ssh/sshd_config.d/60-site.conf'), 'utf8'), 'X11Forwarding no\n');
  t.is(await readFile(join(root, 'var/log/syslog'), 'utf8'), '');
  const blacklist = await readFile(join(root, 'etc/modprobe.d/vm-template-blacklist.conf'), 'utf8');
  for (const module of ['cfg80211', 'floppy', 'joydev', 'psmouse', 'pcspkr']) t.regex(blacklist, new RegExp(`^blacklist ${module}$`, 'm'));
  for (const gone of [
    'etc/ssh/ssh_host_ed25519_key',
    'etc/ssh/sshd_config.d/50-cloud-init.conf',
    'home/debian/.ssh/authorized_keys',
    'root/.bash_history',
    'tmp/leftover',
    'var/lib/dhcp/dhclient.ens3.leases',
    'var/lib/systemd/credential.secret',
    'var/log/syslog.1',
    // Offline nothing holds the journal open: its files go instead of being rotated.
    'var/log/journal/0123456789abcdef0123456789abcdef/system.journal',
  ]) {
    t.false(await exists(join(root, gone)), `${gone} survived`);
  }
});

test("pve-9's cleanup.sh resets the Proxmox identity, iSCSI and postfix names of a fake root", async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'cleanup-pve-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await plant(root, {
    'etc/pve-packages-preinstalled': 'proxmox-ve postfix open-iscsi chrony installed by templates/pve-9\n',
    'etc/hostname': 'pipeline-build\n',
    'etc/hosts': '127.0.0.1 localhost\n10.0.2.15 pipeline-build.localdomain pipeline-build # pipeline-build\n',
    'etc/apt/sources.list.d/pve-enterprise.sources': 'Types: deb\n',
    'etc/apt/sources.list.d/pve-install-repo.sources': 'Types: deb\n',
    'var/lib/pve-cluster/config.db': 'SQLite format 3',
    'var/lib/pve-cluster/config.db-wal': 'wal',
    'var/lib/pve-cluster/backup/config-1760000000.sql.gz': 'backup',
    'etc/pve/priv/pve-root-ca.key': 'CA key',
    'etc/pve/nodes/pipeline-build/pve-ssl.key': 'node key',
    'root/.ssh/id_rsa': 'root key',
    'root/.ssh/id_rsa.pub': 'ssh-rsa AAAA root@pipeline-build',
    'root/.ssh/known_hosts': 'pipeline-build ssh-ed25519 AAAA',
    'root/.ssh/config': 'Ciphers aes128-ctr\n',
    'etc/ssh/sshd_config': 'Include /etc/ssh/sshd_config.d/*.conf\n',
    'var/lib/rrdcached/db/pve-node-9.0/pipeline-build': 'rrd',
    'etc/iscsi/initiatorname.iscsi': 'InitiatorName=iqn.1993-08.org.debian:01:62b74138b93\n',
    'etc/postfix/main.cf':
      'myorigin = /etc/mailname\nmyhostname = pipeline-build.localdomain\nmydestination = $myhostname, pipeline-build.localdomain, pipeline-build, localhost.localdomain, localhost\nrelayhost =\n',
    'etc/mailname': 'pipeline-build.localdomain\n',
    'etc/aliases': 'postmaster: root\n',
    'etc/aliases.db': 'YP_MASTER_NAME pipeline-build',
    'etc/ssl/private/ssl-cert-snakeoil.key': 'snakeoil key',
    'etc/ssl/certs/ssl-cert-snakeoil.pem': 'snakeoil cert',
  });
  await symlink('/etc/pve/priv/authorized_keys', join(root, 'root/.ssh/authorized_keys'));
  await symlink('/etc/pve/priv/known_hosts', join(root, 'etc/ssh/ssh_known_hosts'));
  const { stdout } = await execFile('sh', [join(repo, 'templates/pve-9/cleanup.sh')], { env: { ...process.env, CLEANUP_ROOT: root } });
  t.regex(stdout, /cleanup \(pve-9\): done/);
  for (const gone of [
    'etc/apt/sources.list.d/pve-enterprise.sources',
    'var/lib/pve-cluster/config.db',
    'var/lib/pve-cluster/config.db-wal',
    'var/lib/pve-cluster/backup',
    'etc/pve/priv',
    'etc/pve/nodes',
    'root/.ssh/id_rsa',
    'root/.ssh/id_rsa.pub',
    'root/.ssh/known_hosts',
    'root/.ssh/authorized_keys',
    'etc/ssh/ssh_known_hosts',
    'var/lib/rrdcached/db/pve-node-9.0',
    'etc/mailname',
    'etc/aliases.db',
    'etc/ssl/private/ssl-cert-snakeoil.key',
    'etc/ssl/certs/ssl-cert-snakeoil.pem',
  ]) {
    t.false(await exists(join(root, gone)), `${gone} survived`);
  }
  t.true(await exists(join(root, 'etc/pve')), 'the mount point stays');
  t.true(await exists(join(root, 'etc/apt/sources.list.d/pve-install-repo.sources')));
  t.is(await readFile(join(root, 'root/.ssh/config'), 'utf8'), 'Ciphers aes128-ctr\n');
  t.is(await readFile(join(root, 'etc/hosts'), 'utf8'), '127.0.0.1 localhost\n');
  const initiator = await readFile(join(root, 'etc/iscsi/initiatorname.iscsi'), 'utf8');
  t.regex(initiator, /^GenerateName=yes$/m);
  t.notRegex(initiator, /^InitiatorName=/m);
  t.is(
    await readFile(join(root, 'etc/postfix/main.cf'), 'utf8'),
    'myorigin = /etc/mailname\nmydestination = $myhostname, localhost.localdomain, localhost\nrelayhost =\n',
  );
  t.is(
    await readlink(join(root, 'etc/systemd/system/multi-user.target.wants/pipeline-pve-identity.service')),
    '/etc/systemd/system/pipeline-pve-identity.service',
  );
  const unit = await readFile(join(root, 'etc/systemd/system/pipeline-pve-identity.service'), 'utf8');
  t.regex(unit, /^Before=pve-cluster\.service postfix\.service postfix@-\.service$/m);
  t.regex(unit, /^After=network-online\.target cloud-init-network\.service cloud-init\.service$/m);
  t.regex(unit, /^ExecStart=\/usr\/local\/sbin\/pipeline-pve-identity$/m);
  await t.notThrowsAsync(execFile('sh', ['-n', join(root, 'usr/local/sbin/pipeline-pve-identity')]));
});

test("pve-9's cleanup.sh refuses a build whose PVE install did not finish", async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'cleanup-pve-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await plant(root, { 'var/lib/pve-cluster/config.db': 'SQLite format 3' });
  await t.throwsAsync(execFile('sh', [join(repo, 'templates/pve-9/cleanup.sh')], { env: { ...process.env, CLEANUP_ROOT: root } }), {
    message: /pve-packages-preinstalled is missing/,
  });
  t.true(await exists(join(root, 'var/lib/pve-cluster/config.db')), 'nothing is reset before the check');
});
