// The live tree as a user sees it: the real CLI in a real terminal (tmux), its screen
// captured while it runs. Nodes waiting for a dependency or a pool slot say so and do not
// spin or show a bar; a bar never goes backwards within its phase (a download then its
// verification are two bars, each labelled). The run pauses at gates the test opens only
// after it has seen what it checks, so a slow machine changes nothing but the time.
import test from 'ava';
import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { BIN, makeProject, type Project } from './support/engine-project.ts';

const run = promisify(execFile);

const CONFIG = `
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { defineStepsConfig } from '@engine';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const gate = async (file: string) => { while (!existsSync(file)) await sleep(50); };
const TOTAL = 200 * 1024 * 1024;
export default defineStepsConfig({
  pools: { packer: 1 },
  steps: {
    download: {
      outputs: ['base.img'],
      run: async (ctx) => {
        ctx.status('downloading base.img');
        for (let i = 0; i <= 10; i++) {
          ctx.progress((TOTAL * i) / 10, TOTAL);
          if (i === 5) await gate('gate-download');
          await sleep(40);
        }
        ctx.status('verifying SHA-512');
        for (let i = 0; i <= 10; i++) {
          ctx.progress((TOTAL * i) / 10, TOTAL);
          if (i === 3) await gate('gate-verify');
          await sleep(40);
        }
        await writeFile('base.img', 'base');
      },
    },
    'one:build': { deps: ['download'], pool: 'packer', outputs: ['one.img'], command: ['sh', '-c', 'echo "packer: building one"; while [ ! -e gate-one ]; do sleep 0.05; done; echo 1 > one.img'] },
    'two:build': { deps: ['download'], pool: 'packer', outputs: ['two.img'], command: ['sh', '-c', 'echo "packer: building two"; while [ ! -e gate-two ]; do sleep 0.05; done; echo 2 > two.img'] },
    'two:publish': { deps: ['two:build'], outputs: ['two.pub'], command: ['sh', '-c', 'cp two.img two.pub'] },
  },
  aliases: { all: ['one:build', 'two:publish'] },
  defaultTarget: 'all',
});
`;

/** The CLI in a detached tmux session of its own server, 120 columns wide. */
async function startInTmux(t: import('ava').ExecutionContext, project: Project): Promise<{ screen(): Promise<string> }> {
  const socket = project.path('tmux.sock');
  const tmux = (...args: string[]) => run('tmux', ['-S', socket, ...args], { cwd: project.root });
  // No CI in the terminal's environment: that would choose plain lines over the tree.
  const command = `env -u CI NO_COLOR=1 ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} all; echo $? > exit-code; sleep 600`;
  await tmux('new-session', '-d', '-x', '120', '-y', '40', '-c', project.root, 'sh', '-c', command);
  t.teardown(() => tmux('kill-server').catch(() => undefined));
  return { screen: async () => (await tmux('capture-pane', '-p', '-t', '0')).stdout };
}

interface Frames {
  readonly all: string[];
  /** Captures the screen until `predicate` holds for one capture (which is returned). */
  until(predicate: (screen: string) => boolean, what: string): Promise<string>;
}

function recorder(screen: () => Promise<string>): Frames {
  const all: string[] = [];
  return {
    all,
    async until(predicate, what) {
      const deadline = Date.now() + 120_000;
      for (;;) {
        const frame = await screen();
        all.push(frame);
        if (predicate(frame)) return frame;
        if (Date.now() > deadline) throw new Error(`never saw ${what}; last screen:\n${frame}`);
        await sleep(40);
      }
    },
  };
}

const lineOf = (screen: string, id: string): string | undefined => screen.split('\n').find((line) => new RegExp(`^\\S* ?${id}\\b`).test(line));
/** The output lines listr2 draws under a node's title (`  › …`). */
function outputUnder(screen: string, id: string): string[] {
  const lines = screen.split('\n');
  const at = lines.findIndex((line) => new RegExp(`^\\S* ?${id}\\b`).test(line));
  const below: string[] = [];
  for (let i = at + 1; at >= 0 && i < lines.length && lines[i]!.startsWith('  '); i++) below.push(lines[i]!);
  return below;
}

test('the live tree says what waiting nodes wait for, does not spin them, and no bar goes backwards', async (t) => {
  const project = await makeProject(t, { config: CONFIG });
  const terminal = await startInTmux(t, project);
  const frames = recorder(terminal.screen);

  // The first line comes before the plan is done.
  const first = await frames.until((screen) => screen.trim() !== '', 'any output');
  t.regex(first, /checking 4 nodes|checked 4 nodes/);

  // While the download runs, both builds wait for it, marked as waiting, with no bar.
  const downloading = await frames.until((screen) => /downloading base\.img \[[█░]+\] 50%/.test(screen), 'the download at 50%');
  for (const id of ['one:build', 'two:build']) {
    t.is(lineOf(downloading, id), `◼ ${id} · waiting for download`, downloading);
    t.deepEqual(outputUnder(downloading, id), [], `${id} shows no bar`);
  }
  t.is(lineOf(downloading, 'two:publish'), '◼ two:publish · waiting for two:build');
  await project.write('gate-download', '');
  await frames.until((screen) => /verifying SHA-512 \[[█░]+\] 30%/.test(screen), 'the verification at 30%');
  await project.write('gate-verify', '');

  // One build holds the only packer slot (either may win it): the other waits, still, for
  // several frames.
  const holding = await frames.until(
    (screen) => /^◼ \S+:build · waiting for a packer slot$/m.test(screen) && /packer: building (one|two)/.test(screen),
    'a build waiting for the packer slot',
  );
  const running = /packer: building (one|two)/.exec(holding)![1]!;
  const waiting = running === 'one' ? 'two' : 'one';
  const waitingFrames: string[] = [];
  while (waitingFrames.length < 4) {
    const screen = await terminal.screen();
    frames.all.push(screen);
    waitingFrames.push(screen);
    await sleep(150);
  }
  for (const screen of waitingFrames) {
    t.is(lineOf(screen, `${waiting}:build`), `◼ ${waiting}:build · waiting for a packer slot`, 'the same line in every frame: no spinner');
    t.deepEqual(outputUnder(screen, `${waiting}:build`), []);
  }
  t.not(lineOf(waitingFrames[0]!, `${running}:build`)![0], '◼', 'the running build is not marked as waiting');
  await project.write(`gate-${running}`, '');
  await frames.until((screen) => screen.includes(`packer: building ${waiting}`), `${waiting}:build running`);
  await project.write(`gate-${waiting}`, '');
  await project.waitFor('exit-code', 120_000);
  const last = await terminal.screen();
  t.is((await project.read('exit-code')).trim(), '0', last);
  t.regex(last, /✔ two:publish/);
  t.regex(last, /^4 ran, 0 fresh in /m);

  // Every bar seen, by label: within a label the percentage never goes down.
  const seen = new Map<string, number[]>();
  for (const screen of frames.all) {
    for (const match of screen.matchAll(/› (.+?) \[[█░]+\] (\d+)%/g)) {
      const list = seen.get(match[1]!) ?? [];
      if (list.at(-1) !== Number(match[2])) list.push(Number(match[2]));
      seen.set(match[1]!, list);
    }
  }
  t.deepEqual([...seen.keys()].sort(), ['downloading base.img', 'verifying SHA-512'], 'each phase has its own labelled bar');
  for (const [label, percents] of seen) {
    t.deepEqual(
      percents,
      [...percents].sort((a, b) => a - b),
      `${label} never goes backwards: ${percents.join(' ')}`,
    );
  }
  t.true(seen.get('downloading base.img')!.includes(50));
  t.true(seen.get('verifying SHA-512')!.includes(30));
});
