// The templates and the build task agree on one variable contract (packer 1.6.6 rejects a
// -var the template does not declare; every version rejects a missing variable without a
// default), and the production templates do what the spec asks of them.
import { execFile as execFileCallback } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse } from '@cdktf/hcl2json';
import test from 'ava';
import { TEMPLATE_VARIABLES } from '../tasks/build.ts';

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

async function load(dir: string): Promise<{ text: string; json: ParsedTemplate }> {
  const text = await readFile(join(repo, dir, 'template.pkr.hcl'), 'utf8');
  return { text, json: (await parse(`${dir}/template.pkr.hcl`, text)) as ParsedTemplate };
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

for (const dir of production) {
  test(`${dir} boots the base image with the qemu plugin and seeds cloud-init`, async (t) => {
    const { json, text } = await load(dir);
    const plugins = json.packer?.[0]?.required_plugins?.[0];
    t.is(plugins?.qemu?.source, 'github.com/hashicorp/qemu');
    t.regex(plugins?.qemu?.version ?? '', />= ?1\./);
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
    t.regex(text, /apt-get update/);
    t.regex(text, /apt-get -y .*upgrade/);
    t.regex(text, /install qemu-guest-agent/);
    t.regex(text, /detect-versions\.sh \/tmp\/image-version\.txt/);
    t.regex(text, /direction\s*= "download"[\s\S]*image-version\.txt/);
    t.regex(text, /\$\{path\.root\}\/cleanup\.sh",\s*"\$\{var\.shared_dir\}\/scripts\/cleanup-common\.sh"/);
  });
}

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

test('cleanup-common.sh generalises a fake root without touching the host', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'cleanup-common-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  for (const dir of ['etc/ssh', 'home/debian/.ssh', 'root', 'tmp', 'var/log']) await mkdir(join(root, dir), { recursive: true });
  await writeFile(join(root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
  await writeFile(join(root, 'etc/ssh/ssh_host_ed25519_key'), 'key');
  await writeFile(join(root, 'home/debian/.ssh/authorized_keys'), 'ssh-ed25519 AAAA build');
  await writeFile(join(root, 'root/.bash_history'), 'history');
  await writeFile(join(root, 'tmp/leftover'), 'x');
  await writeFile(join(root, 'var/log/syslog'), 'log');
  const { stdout } = await execFile('sh', [join(repo, 'shared/scripts/cleanup-common.sh')], {
    env: { ...process.env, CLEANUP_ROOT: root },
  });
  t.regex(stdout, /would run: cloud-init clean/);
  t.is(await readFile(join(root, 'etc/machine-id'), 'utf8'), '');
  t.is(await readFile(join(root, 'var/log/syslog'), 'utf8'), '');
  const blacklist = await readFile(join(root, 'etc/modprobe.d/vm-template-blacklist.conf'), 'utf8');
  for (const module of ['cfg80211', 'floppy', 'joydev', 'psmouse', 'pcspkr']) t.regex(blacklist, new RegExp(`^blacklist ${module}$`, 'm'));
  for (const gone of ['etc/ssh/ssh_host_ed25519_key', 'home/debian/.ssh/authorized_keys', 'root/.bash_history', 'tmp/leftover']) {
    await t.throwsAsync(readFile(join(root, gone)), { code: 'ENOENT' }, `${gone} survived`);
  }
});
