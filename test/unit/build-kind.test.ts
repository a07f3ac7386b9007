// The build kind's run in process: packer, ssh-keygen, qemu-img and git are the test's fakes
// (test/unit/support/programs.ts), given to the production TaskContext; the files are real.
// What is checked: which programs run in which order with which variables, what lands in
// images/{name}/, and what a failure leaves (the old outputs, no temp files).
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import test from 'ava';
import { isFailure } from '../../src/failure.ts';
import type { ExecResult } from '../../src/types.ts';
import { buildNode } from '../../tasks/build.ts';
import { type FakeProgram, FakePrograms, FakeQemuImg, kindContext, packerVariables, tempRoot } from './support/programs.ts';
import { qcow2Bytes } from './support/qcow2.ts';

// The build takes SSH_KEY_FILE from the environment when set: these tests make their own key.
delete process.env.SSH_KEY_FILE;

const NAME = 'debian-13';
const BASE = 'cache/debian-13-generic-amd64.qcow2';
const IMAGE = `images/${NAME}/${NAME}.qcow2`;
const PLAIN_TEMPLATE = 'source "null" "demo" {\n  communicator = "none"\n}\n';
const PLUGIN_TEMPLATE = `packer {\n  required_plugins {\n    qemu = {\n      version = ">= 1.1.0"\n      source = "github.com/hashicorp/qemu"\n    }\n  }\n}\n${PLAIN_TEMPLATE}`;

interface Tree {
  readonly root: string;
  write(path: string, data: string | Buffer): void;
  read(path: string): Buffer;
  list(dir: string): string[];
}

function tree(t: Parameters<typeof tempRoot>[0], template = PLAIN_TEMPLATE): Tree {
  const root = tempRoot(t);
  const at = (path: string) => join(root, path);
  const self: Tree = {
    root,
    write(path, data) {
      mkdirSync(dirname(at(path)), { recursive: true });
      writeFileSync(at(path), data);
    },
    read: (path) => readFileSync(at(path)),
    list: (dir) => readdirSync(at(dir)).sort(),
  };
  self.write(`templates/${NAME}/template.pkr.hcl`, template);
  self.write(BASE, 'the base image, version 1');
  return self;
}

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

/** packer 1.6.6 (or `version`), whose build writes what a template's provisioners would: the image and image-version.txt. */
function fakePacker(
  build: (variables: Record<string, string>, run: number) => Partial<ExecResult> | undefined = () => undefined,
  version = '1.6.6',
): FakeProgram {
  let runs = 0;
  return (args) => {
    if (args[0] === 'version') return { stdout: `Packer v${version}\n` };
    if (args[0] === 'init') return { stdout: 'Installed plugin github.com/hashicorp/qemu v1.1.0\n' };
    if (args[0] === 'plugins') return { stdout: '/root/.config/packer/plugins/github.com/hashicorp/qemu/packer-plugin-qemu_v1.1.0_x5.0_linux_amd64\n' };
    const variables = packerVariables(args);
    const answer = build(variables, ++runs);
    if (answer) return answer;
    const out = variables.output_directory!;
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, `${variables.image_name}.qcow2`), qcow2Bytes({ data: `built on ${variables.base_checksum}` }));
    writeFileSync(join(out, 'image-version.txt'), 'DEBIAN_VERSION=13.3\nPVE_VERSION=\n');
    return { stdout: '==> Builds finished. The artifacts of successful builds are:\n--> null.demo: Did not export anything.\n' };
  };
}

const sshKeygen: FakeProgram = (args) => {
  const file = args[args.indexOf('-f') + 1]!;
  writeFileSync(file, 'PRIVATE KEY\n');
  writeFileSync(`${file}.pub`, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake pipeline-build\n');
  return {};
};

const noGit: FakeProgram = () => ({ exitCode: 128, stderr: 'fatal: not a git repository (or any of the parent directories): .git\n' });

function programs(packer: FakeProgram, qemuImg = new FakeQemuImg()): FakePrograms {
  return new FakePrograms({ packer, 'ssh-keygen': sshKeygen, 'qemu-img': qemuImg.program, git: noGit });
}

test('a build runs packer with the template variables, compresses its image and installs the outputs', async (t) => {
  const files = tree(t);
  const fake = programs(fakePacker());
  const node = buildNode({ name: NAME, baseNode: 'trixie:download', baseImage: BASE });
  await node.run(await kindContext(t, files.root, fake, node.id));

  t.deepEqual(fake.commands(), ['packer version', 'ssh-keygen -q', 'packer build', 'git rev-parse', 'qemu-img convert']);
  const [build] = fake.argsOf('packer', 'build');
  const variables = packerVariables(build!);
  t.is(variables.base_image, join(files.root, BASE));
  t.is(variables.base_checksum, `sha256:${sha256('the base image, version 1')}`);
  t.is(variables.image_name, NAME);
  t.is(variables.accelerator, 'kvm');
  t.is(variables.ssh_public_key, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake pipeline-build');
  t.is(variables.shared_dir, join(files.root, 'shared'));
  t.is(build!.at(-1), join(files.root, 'templates', NAME, 'template.pkr.hcl'));
  t.is(fake.calls.find((call) => call.args[0] === 'build')!.cwd, join(files.root, 'templates', NAME));
  const [convert] = fake.argsOf('qemu-img', 'convert');
  t.true(convert!.includes('compression_type=zstd'), 'zstd unless the config says zlib');

  t.deepEqual(files.read(IMAGE), qcow2Bytes({ data: `built on ${variables.base_checksum}` }));
  t.is(files.read(`images/${NAME}/image-version.txt`).toString(), 'DEBIAN_VERSION=13.3\nPVE_VERSION=\n');
  const facts = JSON.parse(files.read(`images/${NAME}/.provenance-facts.json`).toString()) as { packer: { version: string }; source?: unknown };
  t.is(facts.packer.version, '1.6.6');
  t.is(facts.source, undefined, 'outside a git work tree no source is claimed');
  // packer's staging directory, the key pair and every temp are gone.
  t.deepEqual(files.list(`images/${NAME}`), ['.provenance-facts.json', `${NAME}.qcow2`, 'image-version.txt']);
  t.deepEqual(readdirSync(join(files.root, '.pipeline', 'run'), { recursive: true }), [`${process.pid}@${hostname()}`], 'the scratch dir is gone');
});

test('a template that needs plugins runs packer init once per template and packer version, and records the plugin', async (t) => {
  const files = tree(t, PLUGIN_TEMPLATE);
  const fake = programs(fakePacker(undefined, '1.11.2'));
  const node = buildNode({ name: NAME, baseNode: 'trixie:download', baseImage: BASE, compression: 'zlib' });
  await node.run(await kindContext(t, files.root, fake, node.id));
  await node.run(await kindContext(t, files.root, fake, node.id));

  t.is(fake.argsOf('packer', 'init').length, 1);
  t.is(fake.argsOf('packer', 'build').length, 2);
  t.false(
    fake.argsOf('qemu-img', 'convert')[0]!.some((arg) => arg.startsWith('compression_type=')),
    'zlib is the default type: no option',
  );
  const facts = JSON.parse(files.read(`images/${NAME}/.provenance-facts.json`).toString()) as { packer: { plugins: unknown } };
  t.deepEqual(facts.packer.plugins, [{ source: 'github.com/hashicorp/qemu', version: '1.1.0' }]);
});

test('a base that no longer matches its checksum is downloaded again, and the build retried once', async (t) => {
  const files = tree(t);
  const fake = programs(fakePacker((_, run) => (run === 1 ? { exitCode: 1, stderr: "==> qemu: Checksums didn't match. Expected abc\n" } : undefined)));
  let redownloads = 0;
  const node = buildNode({
    name: NAME,
    baseNode: 'trixie:download',
    baseImage: BASE,
    redownloadBase: async () => {
      redownloads++;
      files.write(BASE, 'the base image, version 2');
    },
  });
  await node.run(await kindContext(t, files.root, fake, node.id));

  t.is(redownloads, 1);
  const checksums = fake.argsOf('packer', 'build').map((args) => packerVariables(args).base_checksum);
  t.deepEqual(checksums, [`sha256:${sha256('the base image, version 1')}`, `sha256:${sha256('the base image, version 2')}`]);
  t.deepEqual(files.read(IMAGE), qcow2Bytes({ data: `built on ${checksums[1]}` }));
});

test('a second checksum mismatch fails the build, naming the base', async (t) => {
  const files = tree(t);
  const fake = programs(fakePacker(() => ({ exitCode: 1, stderr: 'Error: checksum mismatch\n' })));
  const node = buildNode({ name: NAME, baseNode: 'trixie:download', baseImage: BASE, redownloadBase: async () => undefined });
  const error = await t.throwsAsync(async () => node.run(await kindContext(t, files.root, fake, node.id)));
  t.true(isFailure(error, 'task'));
  t.regex(error!.message, new RegExp(`base image ${BASE} does not match its checksum`));
  t.is(fake.argsOf('packer', 'build').length, 2);
  t.deepEqual(files.list(`images/${NAME}`), []);
});

test('a failed packer build names its last error line and keeps the old image', async (t) => {
  const files = tree(t);
  files.write(IMAGE, 'the old image');
  const fake = programs(
    fakePacker(() => ({
      exitCode: 1,
      stdout: "==> qemu: Error launching VM: Qemu failed to start\nBuild 'qemu' errored after 2 seconds\n==> Wait completed\n",
    })),
  );
  const node = buildNode({ name: NAME, baseNode: 'trixie:download', baseImage: BASE });
  const error = await t.throwsAsync(async () => node.run(await kindContext(t, files.root, fake, node.id)));
  t.true(isFailure(error, 'task'));
  t.is(error!.message, `packer build failed for templates/${NAME}/template.pkr.hcl (exit 1): Build 'qemu' errored after 2 seconds`);
  t.is(files.read(IMAGE).toString(), 'the old image');
  t.deepEqual(files.list(`images/${NAME}`), [`${NAME}.qcow2`]);
});

test('packer that succeeds without writing the image fails the build; nothing is installed', async (t) => {
  const files = tree(t);
  files.write(IMAGE, 'the old image');
  const fake = programs(
    fakePacker((variables) => {
      mkdirSync(variables.output_directory!, { recursive: true });
      writeFileSync(join(variables.output_directory!, 'image-version.txt'), 'DEBIAN_VERSION=13.3\n');
      return { stdout: 'Build finished\n' };
    }),
  );
  const node = buildNode({ name: NAME, baseNode: 'trixie:download', baseImage: BASE });
  const error = await t.throwsAsync(async () => node.run(await kindContext(t, files.root, fake, node.id)));
  t.is(error!.message, `packer finished but wrote no ${NAME}.qcow2 into output_directory`);
  t.false(fake.commands().includes('qemu-img convert'));
  t.is(files.read(IMAGE).toString(), 'the old image');
  t.deepEqual(files.list(`images/${NAME}`), [`${NAME}.qcow2`]);
});

test('a compression that fails keeps the old outputs and removes its temp files', async (t) => {
  const files = tree(t);
  files.write(IMAGE, 'the old image');
  files.write(`images/${NAME}/image-version.txt`, 'DEBIAN_VERSION=13.2\n');
  const qemuImg = new FakeQemuImg();
  qemuImg.convertFails = 'error while writing at byte 0: No space left on device';
  const fake = programs(fakePacker(), qemuImg);
  const node = buildNode({ name: NAME, baseNode: 'trixie:download', baseImage: BASE });
  const context = await kindContext(t, files.root, fake, node.id);
  const error = await t.throwsAsync(() => node.run(context));
  t.true(isFailure(error, 'task'));
  t.regex(error!.message, /^qemu-img convert .* failed: qemu-img: error while writing at byte 0: No space left on device$/);
  t.is(files.read(IMAGE).toString(), 'the old image');
  t.is(files.read(`images/${NAME}/image-version.txt`).toString(), 'DEBIAN_VERSION=13.2\n');
  await context.removeTemps(); // as the engine does after a failure
  t.deepEqual(files.list(`images/${NAME}`), [`${NAME}.qcow2`, 'image-version.txt']);
});

// Serial: the environment is the process's, and the other tests make their own key.
test.serial('a key in SSH_KEY_FILE that ssh-keygen cannot read fails before packer builds', async (t) => {
  const files = tree(t);
  files.write('keys/id', 'not a key');
  const fake = new FakePrograms({
    packer: fakePacker(),
    'ssh-keygen': () => ({ exitCode: 255, stderr: 'Load key "keys/id": invalid format\n' }),
    git: noGit,
  });
  process.env.SSH_KEY_FILE = join(files.root, 'keys/id');
  t.teardown(() => delete process.env.SSH_KEY_FILE);
  const node = buildNode({ name: NAME, baseNode: 'trixie:download', baseImage: BASE });
  const error = await t.throwsAsync(async () => node.run(await kindContext(t, files.root, fake, node.id)));
  t.regex(error!.message, /^SSH_KEY_FILE=.*: cannot read the key \(Load key "keys\/id": invalid format\); it must be an unencrypted private key$/);
  t.deepEqual(fake.commands(), ['packer version', 'ssh-keygen -y']);
});
