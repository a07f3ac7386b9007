// A signal for in-process calls that tests never abort. A fixed deadline inside a test
// (AbortSignal.timeout) fails it on a loaded machine though nothing is wrong; ava's
// per-test timeout already ends a test that hangs.
export function neverAborted(): AbortSignal {
  return new AbortController().signal;
}
