// Why a node is fresh, stale or pending, or why it did not run: values with a code,
// decided where the planner and the runner find them (Wireit's event reasons). Nothing
// here is prose: src/report/reason-text.ts says each one in words, and `--json` carries
// the value beside those words, so a reader (or a test) compares codes, not sentences.
//
// Text inside a reason comes from a task kind, which words its own findings (`says`), or
// is a path, a name or a node id.
import type { NodeId } from './types.ts';

export type Reason =
  // Fresh: nothing to do.
  | { readonly code: 'up-to-date' }
  /** Its dependencies ran and made the outputs they had made before (early cutoff). */
  | { readonly code: 'dependencies-unchanged' }
  /** Outputs another tool made, taken as the node's: its key file matched, and its kind's check (`says`) passed. */
  | { readonly code: 'adopted'; readonly keyFile?: string; readonly says?: string; readonly remote?: string }
  /** A remote cache holds what the current inputs make, and the key file here already says so. */
  | { readonly code: 'key-matches-remote'; readonly keyFile: string; readonly source: string }
  // Stale: it runs.
  | { readonly code: 'forced' }
  | { readonly code: 'never-built' }
  /** Outputs found with no stamp, which the node's kind refused to take as its own. */
  | { readonly code: 'not-adopted'; readonly says: string }
  /** Outputs found with no stamp, which the node's kind could not check. */
  | { readonly code: 'outputs-unchecked' }
  | { readonly code: 'key-file-missing'; readonly path: string }
  | { readonly code: 'key-file-corrupt'; readonly path: string }
  | { readonly code: 'key-file-mismatch'; readonly path: string }
  | { readonly code: 'kind-changed'; readonly from: string; readonly to: string }
  | { readonly code: 'params-changed' }
  | { readonly code: 'input-added'; readonly path: string }
  | { readonly code: 'input-changed'; readonly path: string }
  | { readonly code: 'input-removed'; readonly path: string }
  | { readonly code: 'env-changed'; readonly name: string }
  | { readonly code: 'dependency-changed'; readonly id: NodeId }
  /** The probe's value moved (upstream state outside the tree); `note` is what the probe said of it. */
  | { readonly code: 'upstream-changed'; readonly note?: string }
  /** The recorded fingerprint differs and no single input says why (a stamp of another version). */
  | { readonly code: 'fingerprint-changed' }
  | { readonly code: 'output-missing'; readonly path: string }
  | { readonly code: 'output-modified'; readonly path: string }
  /** A remote cache holds what the current inputs make: the node fetches it instead of running. */
  | { readonly code: 'remote-hit'; readonly source: string; readonly says: string }
  /** The probe failed: the node fails without running. */
  | { readonly code: 'probe-failed'; readonly message: string }
  // Pending: whether it runs depends on what these dependencies produce.
  | { readonly code: 'waiting-on'; readonly deps: readonly NodeId[] }
  // Did not run.
  | { readonly code: 'dependency-failed'; readonly id: NodeId }
  | { readonly code: 'dependency-skipped'; readonly id: NodeId }
  | { readonly code: 'dependency-cancelled'; readonly id: NodeId }
  /** --keep-going was not given and another node failed, so nothing more starts. */
  | { readonly code: 'earlier-failure' }
  | { readonly code: 'interrupted' }
  /** Assessing the node threw (its `error` says what). */
  | { readonly code: 'assess-failed' };

export type ReasonCode = Reason['code'];

/** Every code, for readers that list them (test/unit/reasons.test.ts holds it and the JSON schema to the union). */
export const REASON_CODES = [
  'up-to-date',
  'dependencies-unchanged',
  'adopted',
  'key-matches-remote',
  'forced',
  'never-built',
  'not-adopted',
  'outputs-unchecked',
  'key-file-missing',
  'key-file-corrupt',
  'key-file-mismatch',
  'kind-changed',
  'params-changed',
  'input-added',
  'input-changed',
  'input-removed',
  'env-changed',
  'dependency-changed',
  'upstream-changed',
  'fingerprint-changed',
  'output-missing',
  'output-modified',
  'remote-hit',
  'probe-failed',
  'waiting-on',
  'dependency-failed',
  'dependency-skipped',
  'dependency-cancelled',
  'earlier-failure',
  'interrupted',
  'assess-failed',
] as const satisfies readonly ReasonCode[];

/** Made once: a no-op run gives every node this one. */
export const UP_TO_DATE: Reason = Object.freeze({ code: 'up-to-date' });
