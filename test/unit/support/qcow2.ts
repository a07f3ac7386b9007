// Small qcow2 files written byte by byte, for the header check and for the fake qemu-img: a
// version 3 header with 64 KiB clusters, its refcount and L1 tables inside the file, and
// `data` (what tells two images apart) in its last cluster. Only the header is real qcow2:
// what lies past it is never read here.

const CLUSTER = 64 * 1024;

export interface Qcow2Options {
  /** Bytes that make this image differ from another. */
  readonly data?: string;
  /** A backing file the header names. */
  readonly backingFile?: string;
  /** The incompatible-features bits (bit 2: an external data file). */
  readonly incompatible?: bigint;
  readonly version?: 2 | 3;
}

export function qcow2Bytes(options: Qcow2Options = {}): Buffer {
  const file = Buffer.alloc(4 * CLUSTER);
  file.writeUInt32BE(0x514649fb, 0);
  file.writeUInt32BE(options.version ?? 3, 4);
  if (options.backingFile !== undefined) {
    const name = Buffer.from(options.backingFile);
    file.writeBigUInt64BE(512n, 8);
    file.writeUInt32BE(name.length, 16);
    name.copy(file, 512);
  }
  file.writeUInt32BE(16, 20); // cluster_bits: 64 KiB
  file.writeBigUInt64BE(1n << 30n, 24); // virtual size: 1 GiB
  file.writeUInt32BE(1, 36); // one L1 entry…
  file.writeBigUInt64BE(BigInt(2 * CLUSTER), 40); // …in the third cluster
  file.writeBigUInt64BE(BigInt(CLUSTER), 48); // the refcount table in the second
  file.writeUInt32BE(1, 56);
  if ((options.version ?? 3) === 3) {
    file.writeBigUInt64BE(options.incompatible ?? 0n, 72);
    file.writeUInt32BE(4, 96); // refcount_order
    file.writeUInt32BE(104, 100); // header length; the end-of-extensions marker (zeros) follows
  }
  Buffer.from(options.data ?? 'image').copy(file, 3 * CLUSTER);
  return file;
}
