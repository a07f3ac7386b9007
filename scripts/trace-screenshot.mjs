// Renders a `--profile` trace in Chromium's own DevTools Performance panel (offline: the
// panel ships with Chromium; Perfetto's UI needs the network and Chromium 156 no longer
// has chrome://tracing) and saves a PNG of its tracks. How docs/demo-trace.png was made:
//
//   node bin/pipeline.js --config demo/pipeline.config.ts publish --profile /tmp/demo-trace.json
//   node --experimental-websocket scripts/trace-screenshot.mjs /tmp/demo-trace.json docs/demo-trace.png
//
// Needs Debian's `chromium`. It drives the panel with clicks at fixed places (close the
// shortcuts card, hide the sidebar, expand the process and its seven tracks), so another
// Chromium release may need other coordinates: look at the PNG.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const [trace, out, tracks = '7'] = process.argv.slice(2);
if (!trace || !out) {
  console.error('usage: node --experimental-websocket scripts/trace-screenshot.mjs TRACE.json OUT.png [TRACKS]');
  process.exit(2);
}
const WIDTH = 1400;
const PORT = 9333;
const profile = mkdtempSync(join(tmpdir(), 'trace-screenshot-'));
const chromium = spawn(
  'chromium',
  [
    '--headless=new',
    '--no-sandbox',
    '--disable-gpu',
    `--user-data-dir=${profile}`,
    `--remote-debugging-port=${PORT}`,
    `--window-size=${WIDTH},1100`,
    'about:blank',
  ],
  { stdio: 'ignore' },
);
try {
  const cdp = await connect();
  await cdp.send('Emulation.setDeviceMetricsOverride', { width: WIDTH, height: 1100, deviceScaleFactor: 1, mobile: false });
  await cdp.send('Page.navigate', { url: `http://127.0.0.1:${PORT}/devtools/devtools_app.html?panel=timeline` });
  // The panel's "Load profile" file input, somewhere in its shadow roots.
  const findInput = `(() => { const all = []; const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot); for (const c of n.children ?? []) walk(c); all.push(n); };
    walk(document.documentElement); return all.find((n) => n.tagName === 'INPUT' && n.type === 'file') ?? null; })()`;
  let input;
  for (let attempt = 0; attempt < 60 && !input?.objectId; attempt++) {
    await sleep(500);
    input = (await cdp.send('Runtime.evaluate', { expression: findInput })).result;
  }
  if (!input?.objectId) throw new Error('the Performance panel did not load');
  await cdp.send('DOM.setFileInputFiles', { files: [resolve(trace)], objectId: input.objectId });
  await sleep(6000);
  const click = async (x, y) => {
    for (const type of ['mouseMoved', 'mousePressed', 'mouseReleased'])
      await cdp.send('Input.dispatchMouseEvent', { type, x, y, button: 'left', clickCount: 1 });
    await sleep(400);
  };
  await click(1371, 77); // close the keyboard-shortcuts card
  await click(15, 39); // hide the sidebar
  await click(10, 129); // expand the process
  for (let i = 0; i < 3; i++) await cdp.send('Input.dispatchMouseEvent', { type: 'mouseWheel', x: 700, y: 300, deltaX: 0, deltaY: 1000 }); // whole run
  await sleep(500);
  // Expand each track, the last first, so the rows above stay where they are.
  for (let row = Number(tracks) - 1; row >= 0; row--) await click(20, 146 + 21 * row);
  await cdp.send('Input.dispatchMouseEvent', { type: 'mouseMoved', x: WIDTH - 100, y: 1050 });
  await sleep(800);
  const height = 146 + 55 * Number(tracks) - 1;
  const shot = await cdp.send('Page.captureScreenshot', { format: 'png', clip: { x: 0, y: 0, width: WIDTH, height, scale: 1 } });
  writeFileSync(out, Buffer.from(shot.data, 'base64'));
  cdp.close();
} finally {
  chromium.kill();
  await sleep(500);
  rmSync(profile, { recursive: true, force: true });
}

/** A minimal DevTools-protocol client over the page target's WebSocket. */
async function connect() {
  let targets;
  for (let attempt = 0; attempt < 50 && !targets; attempt++) {
    await sleep(200);
    targets = await fetch(`http://127.0.0.1:${PORT}/json/list`).then(
      (response) => response.json(),
      () => undefined,
    );
  }
  const page = targets?.find((target) => target.type === 'page');
  if (!page) throw new Error('chromium did not start');
  const socket = new WebSocket(page.webSocketDebuggerUrl);
  await new Promise((resolveOpen, rejectOpen) => {
    socket.onopen = resolveOpen;
    socket.onerror = rejectOpen;
  });
  let next = 0;
  const pending = new Map();
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.error) waiter.reject(new Error(`${message.error.message} (${JSON.stringify(message.error)})`));
    else waiter.resolve(message.result);
  };
  return {
    send(method, params = {}) {
      const id = ++next;
      socket.send(JSON.stringify({ id, method, params }));
      return new Promise((resolveReply, rejectReply) => pending.set(id, { resolve: resolveReply, reject: rejectReply }));
    },
    close: () => socket.close(),
  };
}
