// The header check is pure (bytes in, a verdict out): each way an image can reach beyond
// itself, or not be a qcow2 at all, is named in the words the refusal prints.
import test from 'ava';
import { inspectQcow2Header } from '../../tasks/qcow2-header.ts';
import { qcow2Bytes } from './support/qcow2.ts';

const verdict = (bytes: Buffer) => inspectQcow2Header(bytes.subarray(0, 2 * 1024 * 1024), bytes.length);
const problem = (bytes: Buffer) => {
  const result = verdict(bytes);
  return result.ok ? undefined : result.problem;
};

test('a plain qcow2, version 3 or 2, stands on its own', (t) => {
  t.like(verdict(qcow2Bytes()), { ok: true, version: 3, virtualSize: 1n << 30n, clusterBits: 16 });
  t.like(verdict(qcow2Bytes({ version: 2 })), { ok: true, version: 2 });
});

test('a backing file, an external data file and encryption are refused, naming the file', (t) => {
  t.is(problem(qcow2Bytes({ backingFile: 'json:{"file":"/etc/shadow"}' })), 'it reads through a backing file, "json:{\\"file\\":\\"/etc/shadow\\"}"');
  t.is(problem(qcow2Bytes({ incompatible: 1n << 2n })), 'its data is in an external data file');
  t.is(problem(qcow2Bytes({ incompatible: 1n << 1n })), 'its qcow2 header marks it corrupt');
  t.is(problem(qcow2Bytes({ incompatible: 1n << 40n })), 'its qcow2 header needs features this tool does not know (incompatible bits 0x10000000000)');
  const encrypted = qcow2Bytes();
  encrypted.writeUInt32BE(2, 32);
  t.is(problem(encrypted), 'it is encrypted (crypt_method 2)');
});

test('a header cut short, or one whose tables lie past the end, is truncated or malformed', (t) => {
  const whole = qcow2Bytes();
  t.is(problem(whole.subarray(0, 2)), 'its qcow2 header is truncated (2 bytes)');
  t.is(problem(whole.subarray(0, 40)), 'its qcow2 header is truncated (40 bytes)');
  t.is(problem(whole.subarray(0, 2 * 64 * 1024)), 'its qcow2 header points past the end of the file (131072 bytes): it is truncated or malformed');
  const unaligned = qcow2Bytes();
  unaligned.writeBigUInt64BE(1000n, 48);
  t.is(problem(unaligned), 'its qcow2 header is malformed (L1 table at 131072, refcount table at 1000)');
});

test('what is not qcow2 is named, with the file a VMDK descriptor would read', (t) => {
  t.is(problem(Buffer.alloc(0)), 'it is empty');
  t.is(problem(Buffer.from('# Disk DescriptorFile\nRW 2048 FLAT "/dev/sda" 0\n')), 'it is a VMDK descriptor, not qcow2, reading "/dev/sda"');
  t.is(problem(Buffer.from('json:{"driver":"nbd"}')), 'it is a json: block-device description, not qcow2');
});
