// The heavy-test semaphore the CLI tests share: real separate processes contend for the
// slots, never more than the limit hold one at a time, and a dead holder's slot is taken over.
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO } from './support/engine-project.ts';
import { acquireSlot } from './support/heavy-slots.ts';

const run = promisify(execFile);
const SLOTS = join(REPO, 'test', 'support', 'heavy-slots.ts');

async function tempDir(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'heavy-slots-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A process that waits until all `count` holders have started (so they contend at once, even
 * when a loaded machine starts them seconds apart), takes a slot, logs when it holds it,
 * holds it 500 ms, and gives it back.
 */
function holder(dir: string, limit: number, log: string, count: number): Promise<unknown> {
  const script = `
    import { appendFileSync, readFileSync } from 'node:fs';
    import { acquireSlot } from ${JSON.stringify(SLOTS)};
    const ready = ${JSON.stringify(join(dir, 'ready'))};
    appendFileSync(ready, 'x');
    while (readFileSync(ready, 'utf8').length < ${count}) await new Promise((resolve) => setTimeout(resolve, 20));
    const release = await acquireSlot(${JSON.stringify(join(dir, 'slots'))}, ${limit});
    appendFileSync(${JSON.stringify(log)}, 'take ' + process.pid + '\\n');
    await new Promise((resolve) => setTimeout(resolve, 500));
    appendFileSync(${JSON.stringify(log)}, 'give ' + process.pid + '\\n');
    await release();
  `;
  return run(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { cwd: REPO });
}

test('five processes contending for two slots: never more than two hold one at once', async (t) => {
  const dir = await tempDir(t);
  const log = join(dir, 'events.log');
  await writeFile(log, '');
  await Promise.all(Array.from({ length: 5 }, () => holder(dir, 2, log, 5)));
  const events = (await readFile(log, 'utf8')).trim().split('\n');
  t.is(events.length, 10);
  let holding = 0;
  let most = 0;
  for (const event of events) {
    holding += event.startsWith('take') ? 1 : -1;
    most = Math.max(most, holding);
  }
  t.is(most, 2, events.join('\n'));
});

test('a slot whose holder died is taken over', async (t) => {
  const dir = await tempDir(t);
  const { stdout } = await run(process.execPath, ['-e', 'console.log(process.pid)']);
  const deadPid = stdout.trim();
  const slots = join(dir, 'slots');
  await mkdir(slots);
  await writeFile(join(slots, 'slot-0'), `${deadPid}\n`); // as a worker that died left it
  const release = await acquireSlot(slots, 1);
  t.is((await readFile(join(slots, 'slot-0'), 'utf8')).trim(), String(process.pid));
  await release();
});
