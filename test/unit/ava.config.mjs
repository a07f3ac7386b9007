// `npm run test:unit`: the tests that run the engine and the task kinds in process (no CLI,
// no child processes: the kinds' programs are fakes; no servers), so they need no build and
// finish in well under a minute. `npm test` runs them too, with everything else
// (package.json "ava").
export default {
  files: ['test/unit/**/*.test.ts'],
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  timeout: '1m',
  workerThreads: false,
};
