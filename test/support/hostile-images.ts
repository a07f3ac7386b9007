// Image files a hostile store writer can offer, made with the real qemu-img: each would make
// QEMU read a file on the consumer's host (or is not a sound qcow2 at all). The "host file"
// they point at holds a marker, so a test can look for its bytes in everything written.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const HOSTILE_IMAGE_KINDS = [
  'backing-file',
  'json-backing-file',
  'data-file',
  'vmdk-descriptor',
  'truncated-header',
  'raw-bytes',
  'qcow2-past-eof',
] as const;
export type HostileImageKind = (typeof HOSTILE_IMAGE_KINDS)[number];

/** What the one-line refusal must name for each kind (a regular expression source). */
export const REFUSAL_OF: Record<HostileImageKind, RegExp> = {
  'backing-file': /reads through a backing file, "[^"]*host-secret/,
  'json-backing-file': /reads through a backing file, "json:/,
  'data-file': /external data file, "[^"]*host-secret/,
  'vmdk-descriptor': /VMDK descriptor, not qcow2, reading "[^"]*host-secret/,
  'truncated-header': /(truncated|is empty|malformed|past the end)/,
  'raw-bytes': /not a qcow2 image/,
  'qcow2-past-eof': /(past the end|malformed|truncated)/,
};

/** A file on "the consumer's host" full of a marker no image holds otherwise. */
export async function makeHostFile(dir: string): Promise<{ path: string; marker: Buffer }> {
  const marker = Buffer.from(`HOST-SECRET-${randomBytes(12).toString('hex')}`);
  const path = join(dir, 'host-secret.bin');
  await writeFile(path, Buffer.concat(Array.from({ length: Math.ceil(65536 / marker.length) }, () => marker)).subarray(0, 65536));
  return { path, marker };
}

/** A sound, self-contained qcow2 of about `dataBytes` of random data (for honest images). */
export function makeGoodQcow2(path: string, dataBytes = 96 * 1024): void {
  const raw = `${path}.raw`;
  execFileSync('sh', ['-c', 'head -c "$1" /dev/urandom > "$2"', 'sh', String(dataBytes), raw]);
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, path]);
  execFileSync('rm', ['-f', raw]);
}

/** Writes a hostile image of `kind` to `path`, pointing at `hostFile` where it points anywhere; `random` picks sizes. */
export async function makeHostileImage(kind: HostileImageKind, path: string, hostFile: string, random: () => number = Math.random): Promise<void> {
  switch (kind) {
    case 'backing-file':
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', hostFile, '-F', 'raw', path, '64K']);
      return;
    case 'json-backing-file':
      // -u: the backing file is not opened (a json: name needs no file to exist to be named).
      execFileSync('qemu-img', [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-u',
        '-b',
        `json:{"driver":"raw","file":{"driver":"file","filename":"${hostFile}"}}`,
        '-F',
        'raw',
        path,
        '64K',
      ]);
      return;
    case 'data-file': {
      // Made against a scratch data file, then pointed at the host file without touching it.
      const scratch = `${path}.data`;
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${scratch},data_file_raw=on`, path, '64K']);
      execFileSync('qemu-img', ['amend', '-q', '-f', 'qcow2', '-o', `data_file=${hostFile}`, path]);
      execFileSync('rm', ['-f', scratch]);
      return;
    }
    case 'vmdk-descriptor':
      await writeFile(path, `# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 128 FLAT "${hostFile}" 0\n`);
      return;
    case 'truncated-header': {
      makeGoodQcow2(path, 4096);
      const bytes = await readFile(path);
      await writeFile(path, bytes.subarray(0, Math.floor(random() * 104)));
      return;
    }
    case 'raw-bytes':
      await writeFile(path, randomBytes(4096 + Math.floor(random() * 4096)));
      return;
    case 'qcow2-past-eof': {
      // A whole header whose tables lie beyond the end of the file: cut after the first cluster.
      makeGoodQcow2(path, 256 * 1024);
      const bytes = await readFile(path);
      await writeFile(path, bytes.subarray(0, 65536));
      return;
    }
  }
}
