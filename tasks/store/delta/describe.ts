// What moved for an image, said for a person.
import { formatBytes } from '../../../src/index.ts';
import type { Transfer } from '../get-image.ts';

/** `pve-9: 41.2 MiB fetched, 167.5 MiB reused from /var/lib/vz/template/iso/pve-9.img (208.7 MiB)`. */
export function describeTransfer(name: string, size: number, transfer: Transfer): string {
  const reused = transfer.reused.map((seed) => `${formatBytes(seed.bytes)} reused from ${seed.path}`);
  return `${name}: ${[`${formatBytes(transfer.fetched)} fetched`, ...reused].join(', ')} (${formatBytes(size)})`;
}
