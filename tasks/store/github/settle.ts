// Carries out layout.ts's plan for one image: look, act, look again, until the image is
// settled. Another writer acting on the same image at the same moment shows up as a name
// taken or an asset gone; both mean "look again", never a failure.
import { setTimeout as sleep } from 'node:timers/promises';
import { Failure } from '../../../src/index.ts';
import { imageAssetRole } from './asset-names.ts';
import { decisive, layoutOf, settlePlan, type Action, type ImageLayout } from './layout.ts';
import { runIsOver } from './runs.ts';
import { inParallel, type ReleaseReader } from './snapshot.ts';

/** Looks at one image before giving up: each round either settles it or saw another writer act. */
const MAX_ROUNDS = 25;
/** Looks whose listing a second one did not confirm (the image's assets changed meanwhile), before giving up. */
const MAX_UNCONFIRMED = 100;

export interface SettleContext {
  readonly reader: ReleaseReader;
  readonly signal: AbortSignal;
  readonly log: (line: string) => void;
}

/**
 * Settles `name`. With `commit` (the id of the caller's own commit), "settled" also means
 * that commit was seen: in place, or replaced by a newer one, or gone for good.
 */
export async function settleImage(context: SettleContext, name: string, commit?: number): Promise<ImageLayout> {
  let unconfirmed = 0;
  for (let round = 1; round <= MAX_ROUNDS && unconfirmed <= MAX_UNCONFIRMED; round++) {
    context.signal.throwIfAborted();
    const snapshot = await context.reader.snapshot([name], context.signal);
    const layout = layoutOf(name, snapshot.assets, snapshot.docs);
    const phases = settlePlan(layout, (run, createdAt) => runIsOver(run, createdAt));
    const missed = commit !== undefined && (layout.current?.asset.id ?? 0) < commit && !snapshot.assets.some((asset) => asset.id === commit);
    if (missed && (await context.reader.api.getAsset(commit))) continue;
    // Decide only on a listing two looks agree on (a page boundary can move under another writer).
    const decides = decisive(snapshot.assets);
    if (!(await context.reader.confirms(snapshot.assets, (asset) => imageAssetRole(name, asset.name) !== undefined && decides(asset)))) {
      unconfirmed++;
      round--;
      await sleep(10 + Math.random() * 40, undefined, { signal: context.signal });
      continue;
    }
    if (!phases.length) return layout;
    let raced = false;
    for (const phase of phases) {
      const outcomes = await inParallel(phase, 8, (action) => perform(context, action));
      if (outcomes.includes('raced')) {
        raced = true;
        break;
      }
    }
    // Someone else is acting on this image: give them a moment, then look again.
    if (raced) await sleep(Math.random() * 40 * Math.min(round, 5), undefined, { signal: context.signal });
  }
  throw new Failure('network', `release ${context.reader.release.tag_name} kept changing while ${name} was put in place; run the upload again`);
}

async function perform(context: SettleContext, action: Action): Promise<'done' | 'raced'> {
  const { api } = context.reader;
  switch (action.kind) {
    case 'rename':
      return (await api.renameAsset(action.asset, action.to)) === 'renamed' ? 'done' : 'raced';
    case 'replace': {
      // Back to back: the name is free only for the time between these two requests.
      await api.deleteAsset(action.old);
      return (await api.renameAsset(action.asset, action.to)) === 'renamed' ? 'done' : 'raced';
    }
    case 'delete':
      if ((await api.deleteAsset(action.asset)) === 'deleted') context.log(`deleted ${action.asset.name} (${action.why})`);
      return 'done';
    case 'undo':
      for (const id of action.missing) if (await api.getAsset(id)) return 'raced';
      if ((await api.deleteAsset(action.commit)) === 'deleted') context.log(`undid ${action.commit.name}: the upload it commits lost some of its assets`);
      return 'done';
  }
}
