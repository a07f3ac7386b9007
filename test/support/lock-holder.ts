// A separate process that takes the tree lock, records when it held it, and lets go:
// `node --import=tsx test/support/lock-holder.ts LOCK LOG HOLD_MS`. Used to race real
// processes for one lock.
import { appendFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { acquireLock } from '../../src/lock.ts';

const [lockPath, logPath, holdMs] = process.argv.slice(2);
let tookOver = '';
const lock = await acquireLock(lockPath!, {
  wait: true,
  signal: new AbortController().signal,
  pollMs: 10,
  unreadableGraceMs: 300,
  onTakeover: (what) => (tookOver = what),
});
await appendFile(logPath!, `enter ${process.pid} ${process.hrtime.bigint()}\n`);
await sleep(Number(holdMs));
await appendFile(logPath!, `exit ${process.pid} ${process.hrtime.bigint()}${tookOver ? ` took-over ${JSON.stringify(tookOver)}` : ''}\n`);
await lock.release();
