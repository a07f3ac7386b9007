// Carries out layout.ts's plan for one image: look, act, look again, until the image is
// settled. Another writer acting on the same image at the same moment shows up as a name
// taken or an asset gone; both mean "look again", never a failure.
import { setTimeout as sleep } from 'node:timers/promises';
import { Failure } from '../../../src/types.ts';
import { layoutOf, settlePlan, type Action, type ImageLayout } from './layout.ts';
import { runIsOver } from './runs.ts';
import { inParallel, type ReleaseReader } from './snapshot.ts';

/** Looks at one image before giving up: each round either settles it or saw another writer act. */
const MAX_ROUNDS = 25;

export interface SettleContext {
  readonly reader: ReleaseReader;
  readonly signal: AbortSignal;
  readonly log: (line: string) => void;
}

export async function settleImage(context: SettleContext, name: string): Promise<ImageLayout> {
  for (let round = 1; round <= MAX_ROUNDS; round++) {
    context.signal.throwIfAborted();
    const snapshot = await context.reader.snapshot([name], context.signal);
    const layout = layoutOf(name, snapshot.assets, snapshot.docs);
    const phases = settlePlan(layout, (run, createdAt) => runIsOver(run, createdAt));
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
