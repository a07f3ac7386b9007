// What a release's assets say about one image, and what it takes to settle it. Pure: a
// listing and the record docs read from it in, a verdict and a plan out, so every writer
// (and every reader) that sees the same listing reaches the same decision.
//
// Settling converges on the newest record whose bytes are all on the release ("current"):
// its assets are renamed to their final names (renames onto free names first; an old asset
// holding a name is deleted right before its replacement is renamed), then the record
// itself, then what no record needs any more is deleted. Every step is idempotent and
// keyed by asset id, so any number of writers may settle one image at once.
import { checksumAssetName, imageAssetRole, isFinalData, parseAssetName, partSuffix, recordAssetName, tempRun, wholeAssetName } from './asset-names.ts';
import type { RecordDoc } from './record-asset.ts';

export interface Asset {
  readonly id: number;
  readonly name: string;
  readonly size: number;
  readonly state: string;
  readonly created_at?: string;
  /** Where anyone can download it (a public release needs no token there). */
  readonly browser_download_url?: string;
}

/** Record docs read so far, by asset id; undefined: the asset holds no valid doc for its image. */
export type Docs = ReadonlyMap<number, RecordDoc | undefined>;

export interface Candidate {
  readonly asset: Asset;
  readonly doc: RecordDoc;
  /** Final name -> the asset holding those bytes now (under a temporary or its final name). */
  readonly bound: ReadonlyMap<string, Asset>;
  /** True while the record is a commit not yet settled (its assets not all in place). */
  readonly pending: boolean;
}

export interface ImageLayout {
  readonly name: string;
  /** Every asset of this image, final and temporary. */
  readonly assets: readonly Asset[];
  readonly finalRecord?: Asset;
  /** Fully uploaded records under temporary names. */
  readonly commits: readonly Asset[];
  /** The newest record whose bytes are all on the release: what the image is, or is becoming. */
  readonly current?: Candidate;
  /** Commits whose bytes are not all on the release any more: to be undone. */
  readonly broken: ReadonlyArray<{ readonly asset: Asset; readonly missing: readonly number[] }>;
  /** Commits older than current: to be dropped with their bytes. */
  readonly superseded: readonly Asset[];
}

/**
 * The assets a decision about the release rests on: everything under a final name, the
 * commits, and the pieces of committed uploads, but not the temporaries of uploads still
 * under way (which come and go without changing any decision). Two listings that agree on
 * these agree on what to do.
 */
export function decisive(assets: readonly Asset[]): (asset: Asset) => boolean {
  const committed = new Set<string>();
  for (const asset of assets) {
    const parsed = parseAssetName(asset.name);
    if (parsed?.role === 'record' && parsed.run !== undefined && asset.state === 'uploaded') committed.add(parsed.run);
  }
  return (asset) => {
    const run = tempRun(asset.name);
    return run === undefined || committed.has(run);
  };
}

/** Record assets whose docs a layout needs: the final record and every commit. */
export function recordAssetsOf(name: string, assets: readonly Asset[]): Asset[] {
  return assets.filter((asset) => asset.state === 'uploaded' && imageAssetRole(name, asset.name)?.role === 'record');
}

export function layoutOf(name: string, all: readonly Asset[], docs: Docs): ImageLayout {
  const assets = all.filter((asset) => imageAssetRole(name, asset.name) !== undefined);
  const uploaded = assets.filter((asset) => asset.state === 'uploaded');
  const byId = new Map(uploaded.map((asset) => [asset.id, asset]));
  const byName = new Map(uploaded.map((asset) => [asset.name, asset]));
  const finalRecord = byName.get(recordAssetName(name));
  const commits = recordAssetsOf(name, assets).filter((asset) => asset !== finalRecord);

  const candidates: Candidate[] = [];
  const broken: Array<{ asset: Asset; missing: number[] }> = [];
  for (const commit of commits) {
    const doc = docs.get(commit.id);
    if (!doc) {
      broken.push({ asset: commit, missing: [] });
      continue;
    }
    const bound = new Map<string, Asset>();
    const missing: number[] = [];
    for (const entry of doc.assets) {
      const asset = byId.get(entry.id);
      if (asset) bound.set(entry.name, asset);
      else missing.push(entry.id);
    }
    if (missing.length) broken.push({ asset: commit, missing });
    else candidates.push({ asset: commit, doc, bound, pending: true });
  }
  const finalDoc = finalRecord ? docs.get(finalRecord.id) : undefined;
  if (finalRecord && finalDoc) {
    // In place, a record's bytes are found by id, or by name when the release was rebuilt
    // from copies (the ids changed, the names and sizes did not).
    const sizes = new Map(finalDoc.image.parts.map((part) => [part.name, part.size]));
    const bound = new Map<string, Asset>();
    for (const entry of finalDoc.assets) {
      const asset = byId.get(entry.id) ?? byName.get(entry.name);
      const size = sizes.get(entry.name);
      if (asset && (size === undefined || asset.size === size)) bound.set(entry.name, asset);
    }
    if (bound.size === finalDoc.assets.length) {
      const pending = [...bound].some(([finalName, asset]) => asset.name !== finalName);
      candidates.push({ asset: finalRecord, doc: finalDoc, bound, pending });
    }
  }
  const current = candidates.reduce<Candidate | undefined>((best, candidate) => (!best || candidate.asset.id > best.asset.id ? candidate : best), undefined);
  const superseded = candidates.filter((candidate) => candidate !== current && candidate.asset !== finalRecord).map((candidate) => candidate.asset);
  return {
    name,
    assets,
    ...(finalRecord ? { finalRecord } : {}),
    commits,
    ...(current ? { current: { ...current, pending: current.pending || current.asset !== finalRecord } } : {}),
    broken,
    superseded,
  };
}

export type Action =
  /** Give an asset its final name (no other asset holds it). */
  | { readonly kind: 'rename'; readonly asset: Asset; readonly to: string }
  /** Delete `old`, which holds the name, then rename `asset` to it at once. */
  | { readonly kind: 'replace'; readonly old: Asset; readonly asset: Asset; readonly to: string }
  | { readonly kind: 'delete'; readonly asset: Asset; readonly why: string }
  /** Drop a commit whose bytes are gone, once `missing` is confirmed gone (a listing can miss changes). */
  | { readonly kind: 'undo'; readonly commit: Asset; readonly missing: readonly number[] };

/**
 * The steps that settle an image, in phases: the actions of one phase are independent
 * (run them at once); a phase starts when the one before it has finished. Empty: settled.
 * `runIsOver(run, createdAt)` says whether an uncommitted upload can still finish.
 */
export function settlePlan(layout: ImageLayout, runIsOver: (run: string, createdAt: string | undefined) => boolean): Action[][] {
  const { name, current } = layout;
  const holder = new Map(layout.assets.map((asset) => [asset.name, asset]));
  const keep = new Set<number>();
  const replaced = new Set<number>();
  const phases: Action[][] = [[], [], [], []];

  if (current) {
    for (const asset of current.bound.values()) keep.add(asset.id);
    keep.add(current.asset.id);
    const place = (finalName: string, asset: Asset, phaseIfFree: number, phaseIfHeld: number): void => {
      if (asset.name === finalName) return;
      const old = holder.get(finalName);
      if (!old) phases[phaseIfFree]!.push({ kind: 'rename', asset, to: finalName });
      else if (!keep.has(old.id)) {
        phases[phaseIfHeld]!.push({ kind: 'replace', old, asset, to: finalName });
        replaced.add(old.id);
      }
    };
    // Data onto free names first (the old image stays whole meanwhile), then every name
    // held by an old asset at once, the checksum among them, then the record.
    for (const [finalName, asset] of current.bound) {
      place(finalName, asset, finalName === checksumAssetName(name) ? 1 : 0, 1);
    }
    place(recordAssetName(name), current.asset, 2, 2);
  }

  const cleanup = phases[3]!;
  const committedRuns = new Set<string>();
  for (const commit of [current?.asset, ...layout.superseded, ...layout.broken.map((item) => item.asset)]) {
    const run = commit && imageAssetRole(name, commit.name)?.run;
    if (run) committedRuns.add(run);
  }
  const droppedRuns = new Set<string>();
  for (const asset of layout.superseded) {
    cleanup.push({ kind: 'delete', asset, why: 'a newer upload replaced it' });
    droppedRuns.add(imageAssetRole(name, asset.name)!.run!);
  }
  // Its pieces stay until the undo is confirmed (then they are an unfinished upload's):
  // a listing that missed an asset must not cost a good commit its bytes.
  for (const item of layout.broken) cleanup.push({ kind: 'undo', commit: item.asset, missing: item.missing });
  const undone = new Set([...layout.superseded, ...layout.broken.map((item) => item.asset)].map((asset) => asset.id));
  for (const asset of layout.assets) {
    if (keep.has(asset.id) || undone.has(asset.id) || replaced.has(asset.id)) continue;
    const role = imageAssetRole(name, asset.name)!;
    if (role.run === undefined) {
      // Bytes and checksums in place that the current record does not name are old.
      if (current && role.role !== 'record') cleanup.push({ kind: 'delete', asset, why: 'left over from the image it replaced' });
      continue;
    }
    if (droppedRuns.has(role.run)) cleanup.push({ kind: 'delete', asset, why: 'part of an upload that was replaced or undone' });
    else if (!committedRuns.has(role.run) && runIsOver(role.run, asset.created_at)) {
      cleanup.push({ kind: 'delete', asset, why: 'left by an upload that did not finish' });
    }
  }
  return phases.filter((phase) => phase.length > 0);
}

/** Where an unrecorded image's bytes are, by name alone (releases written before records existed). */
export function bindByName(name: string, assets: readonly Asset[]): { readonly data: Asset[]; readonly checksum: Asset } | { readonly missing: string } {
  const uploaded = assets.filter((asset) => asset.state === 'uploaded');
  const checksum = uploaded.find((asset) => asset.name === checksumAssetName(name));
  const whole = uploaded.find((asset) => asset.name === wholeAssetName(name));
  const parts = uploaded
    .filter((asset) => isFinalData(name, asset.name) && asset !== whole)
    .sort((a, b) => a.name.length - b.name.length || a.name.localeCompare(b.name));
  if (!whole && parts.length === 0) return { missing: `${name} is not there (no ${wholeAssetName(name)}, nor parts of it)` };
  if (!checksum) return { missing: `${name} has no ${checksumAssetName(name)}; refusing to download unverifiable bytes` };
  if (whole) return { data: [whole], checksum };
  for (const [index, part] of parts.entries()) {
    const expected = `${name}.qcow2.part${partSuffix(index)}`;
    if (part.name !== expected) return { missing: `${name} is missing part ${expected}` };
  }
  return { data: parts, checksum };
}
