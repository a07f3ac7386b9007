// Where a host may already hold some of an image: the copy being replaced, the published
// `.img`, the build output, and the same places for the store's other images (debian-13
// and pve-9 share their base). Listed in that order; those that exist are used.
import { join } from 'node:path';
import type { Seed } from './seed-scan.ts';

export interface SeedPlaces {
  readonly name: string;
  /** The file the download replaces (`--dir`'s `{name}.qcow2`), if any. */
  readonly replacing?: string;
  /** The publish directory (`{name}.img`). */
  readonly publishDir?: string;
  /** `images/{name}/{name}.qcow2` for a name. */
  readonly builtImage?: (name: string) => string;
  /** The download directory (`{name}.qcow2` of other images). */
  readonly downloadDir?: string;
  /** The store's other images. */
  readonly others: readonly string[];
}

export function seedCandidates(places: SeedPlaces): Seed[] {
  const seeds: Seed[] = [];
  const forImage = (name: string, own: boolean): void => {
    if (own && places.replacing) seeds.push({ path: places.replacing, role: 'the file being replaced' });
    if (!own && places.downloadDir) seeds.push({ path: join(places.downloadDir, `${name}.qcow2`), role: `downloaded ${name}` });
    if (places.publishDir) seeds.push({ path: join(places.publishDir, `${name}.img`), role: `published ${name}` });
    if (places.builtImage) seeds.push({ path: places.builtImage(name), role: `built ${name}` });
  };
  forImage(places.name, true);
  for (const other of places.others) if (other !== places.name) forImage(other, false);
  return seeds;
}
