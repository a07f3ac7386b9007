// What the first cluster of an image file says about it, read without qemu-img: whether it
// is a qcow2 that stands on its own (no backing file, no external data file, no
// encryption, a header whose fields are in range), and if not, what it is and which
// other file it would make QEMU read. An image from a store is untrusted: QEMU follows a
// backing file or a data file wherever it points (a path on the consumer's host, a
// `json:` or protocol name), so such an image is refused before qemu-img ever opens it.
// Pure: bytes in, a verdict out (tasks/image-check.ts reads the bytes).
import { quoteUntrusted } from './untrusted-text.ts';

/** How much of the file the verdict needs: qcow2 keeps its header and extensions in the first cluster (at most 2 MiB). */
export const HEADER_READ_BYTES = 2 * 1024 * 1024;

const QCOW2_MAGIC = 0x514649fb;
const VERSION_2_HEADER = 72;
const VERSION_3_MIN_HEADER = 104;
const MIN_CLUSTER_BITS = 9;
const MAX_CLUSTER_BITS = 21;
/** QEMU refuses a backing file name longer than this. */
const MAX_BACKING_NAME = 1023;

/** Header extension types (docs/interop/qcow2.txt in QEMU). */
const EXTENSION_END = 0;
const EXTENSION_DATA_FILE = 0x44415441;
const EXTENSION_ENCRYPTION = 0x0537be77;

/** Incompatible feature bits QEMU 7 knows: dirty, corrupt, external data file, compression type, extended L2. */
const KNOWN_INCOMPATIBLE = 0b11111n;
const INCOMPATIBLE_CORRUPT = 1n << 1n;
const INCOMPATIBLE_DATA_FILE = 1n << 2n;

export type HeaderVerdict =
  | { readonly ok: true; readonly version: 2 | 3; readonly virtualSize: bigint; readonly clusterBits: number }
  /** `problem` completes "{file} is not a self-contained qcow2 image: …". */
  | { readonly ok: false; readonly problem: string };

/**
 * The verdict on an image file from its first bytes (`head`, up to HEADER_READ_BYTES) and
 * its size. Anything but a plain, self-contained qcow2 is refused, with what it is or
 * what it references.
 */
export function inspectQcow2Header(head: Buffer, fileSize: number): HeaderVerdict {
  const refuse = (problem: string): HeaderVerdict => ({ ok: false, problem });
  const magic = Buffer.alloc(4);
  magic.writeUInt32BE(QCOW2_MAGIC);
  // A few bytes that begin the magic are what a qcow2 cut short leaves.
  if (head.length > 0 && head.length < 4 && magic.subarray(0, head.length).equals(head)) return refuse(`its qcow2 header is truncated (${head.length} bytes)`);
  if (head.length < 4 || head.readUInt32BE(0) !== QCOW2_MAGIC) return refuse(describeOtherFormat(head));
  if (head.length < VERSION_2_HEADER) return refuse(`its qcow2 header is truncated (${head.length} bytes)`);
  const version = head.readUInt32BE(4);
  if (version !== 2 && version !== 3) return refuse(`its qcow2 header has version ${version} (only 2 and 3 exist)`);
  const clusterBits = head.readUInt32BE(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) return refuse(`its qcow2 header has cluster_bits ${clusterBits} (9 to 21 are valid)`);
  const clusterSize = 2 ** clusterBits;
  // Everything the header says about other files lies in the first cluster.
  const first = head.subarray(0, Math.min(head.length, clusterSize));

  const problem =
    backingFileProblem(first) ??
    encryptionProblem(first) ??
    tablesProblem(first, clusterSize, fileSize) ??
    (version === 3 ? version3Problem(first) : readExtensions(first, VERSION_2_HEADER).problem);
  if (problem !== undefined) return refuse(problem);
  return { ok: true, version, virtualSize: first.readBigUInt64BE(24), clusterBits };
}

/** The backing file the header names (QEMU would read it), or one it cannot even hold. */
function backingFileProblem(first: Buffer): string | undefined {
  const backingOffset = first.readBigUInt64BE(8);
  const backingSize = first.readUInt32BE(16);
  if (backingOffset === 0n) return undefined;
  if (backingSize === 0 || backingSize > MAX_BACKING_NAME || backingOffset + BigInt(backingSize) > BigInt(first.length)) {
    return `it names a backing file its header cannot hold (offset ${backingOffset}, ${backingSize} bytes)`;
  }
  const name = first.subarray(Number(backingOffset), Number(backingOffset) + backingSize);
  return `it reads through a backing file, ${quoteName(name)}`;
}

function encryptionProblem(first: Buffer): string | undefined {
  const cryptMethod = first.readUInt32BE(32);
  return cryptMethod !== 0 ? `it is encrypted (crypt_method ${cryptMethod})` : undefined;
}

/** The L1 and refcount tables: cluster-aligned, and within the file. */
function tablesProblem(first: Buffer, clusterSize: number, fileSize: number): string | undefined {
  const clusterAligned = (offset: bigint) => offset % BigInt(clusterSize) === 0n;
  const l1Offset = first.readBigUInt64BE(40);
  const refcountOffset = first.readBigUInt64BE(48);
  const refcountClusters = first.readUInt32BE(56);
  if (refcountOffset === 0n || !clusterAligned(refcountOffset) || !clusterAligned(l1Offset)) {
    return `its qcow2 header is malformed (L1 table at ${l1Offset}, refcount table at ${refcountOffset})`;
  }
  const refcountEnd = refcountOffset + BigInt(refcountClusters) * BigInt(clusterSize);
  const l1End = l1Offset + BigInt(first.readUInt32BE(36)) * 8n;
  if (refcountClusters === 0 || refcountEnd > BigInt(fileSize) || l1End > BigInt(fileSize)) {
    return `its qcow2 header points past the end of the file (${fileSize} bytes): it is truncated or malformed`;
  }
  return undefined;
}

/** A version 3 header's feature bits, its length and its extensions: no corruption, no unknown feature, no data file, no encryption. */
function version3Problem(first: Buffer): string | undefined {
  if (first.length < VERSION_3_MIN_HEADER) return `its qcow2 version 3 header is truncated (${first.length} bytes)`;
  const incompatible = first.readBigUInt64BE(72);
  if (incompatible & INCOMPATIBLE_CORRUPT) return 'its qcow2 header marks it corrupt';
  const unknown = incompatible & ~KNOWN_INCOMPATIBLE;
  if (unknown !== 0n) return `its qcow2 header needs features this tool does not know (incompatible bits 0x${unknown.toString(16)})`;
  const headerLength = first.readUInt32BE(100);
  if (headerLength < VERSION_3_MIN_HEADER || headerLength % 8 !== 0 || headerLength > first.length) {
    return `its qcow2 header has an invalid length (${headerLength})`;
  }
  const extensions = readExtensions(first, headerLength);
  if (extensions.problem !== undefined) return extensions.problem;
  const dataFile = extensions.found.get(EXTENSION_DATA_FILE);
  if (incompatible & INCOMPATIBLE_DATA_FILE || dataFile) return `its data is in an external data file${dataFile?.length ? `, ${quoteName(dataFile)}` : ''}`;
  if (extensions.found.has(EXTENSION_ENCRYPTION)) return 'it carries an encryption header';
  return undefined;
}

/** Header extensions from `at` to the end marker, by type; a problem when they run off the first cluster. */
function readExtensions(first: Buffer, at: number): { found: Map<number, Buffer>; problem?: undefined } | { problem: string } {
  const found = new Map<number, Buffer>();
  for (let offset = at; ; ) {
    if (offset + 8 > first.length) return { problem: 'its qcow2 header extensions run past the first cluster' };
    const type = first.readUInt32BE(offset);
    const length = first.readUInt32BE(offset + 4);
    if (type === EXTENSION_END) return { found };
    const end = offset + 8 + length;
    if (end > first.length) return { problem: `its qcow2 header extension 0x${type.toString(16)} runs past the first cluster` };
    if (found.has(type)) return { problem: `its qcow2 header repeats extension 0x${type.toString(16)}` };
    found.set(type, first.subarray(offset + 8, end));
    offset = end + ((8 - (length % 8)) % 8);
  }
}

/** What a file that is not qcow2 is, naming any file it would make QEMU read. */
function describeOtherFormat(head: Buffer): string {
  if (head.length === 0) return 'it is empty';
  const text = head.subarray(0, 64 * 1024).toString('latin1');
  if (/^\s*#\s*Disk DescriptorFile/i.test(text) || /^\s*(RW|RDONLY|NOACCESS)\s+\d+\s+\w+\s+"/m.test(text)) {
    const extent = /^\s*(?:RW|RDONLY|NOACCESS)\s+\d+\s+\w+\s+"([^"\n]*)"/m.exec(text)?.[1];
    return `it is a VMDK descriptor, not qcow2${extent !== undefined ? `, reading ${quoteName(Buffer.from(extent, 'latin1'))}` : ''}`;
  }
  if (text.startsWith('json:')) return 'it is a json: block-device description, not qcow2';
  const magic = head.subarray(0, 4).toString('latin1');
  const known: Record<string, string> = {
    KDMV: 'a VMDK image',
    'QFI\xfb': 'qcow2',
    'QFI\xfe': 'a QED image',
    conectix: 'a VHD image',
    vhdxfile: 'a VHDX image',
  };
  const format = known[magic] ?? known[head.subarray(0, 8).toString('latin1')];
  if (format) return `it is ${format}, not qcow2`;
  if (head.length >= 72 && head.toString('latin1', 64, 72).includes('<<< Or')) return 'it is a VirtualBox VDI image, not qcow2';
  return 'it is not a qcow2 image (no qcow2 magic)';
}

function quoteName(bytes: Buffer): string {
  return quoteUntrusted(bytes.toString('utf8'));
}
