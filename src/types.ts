// The engine's vocabulary. Nothing here knows what an image is: a node is a unit of work
// with declared inputs and outputs, and a task kind (in tasks/) supplies its `run`.

/** A node's id, as the user types it in a target: `debian-12:build`, `trixie:download`. */
export type NodeId = string;

/** What `TaskContext.progress` counts. */
export type ProgressUnit = 'bytes' | 'percent';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Digests of one file's content. `sha256` is present only when it was asked for. */
export interface FileDigest {
  readonly size: number;
  /** xxh64 as 16 hex digits: what the engine compares. */
  readonly xxh: string;
  /** SHA-256 as 64 hex digits: what people and other tools check. */
  readonly sha256?: string;
}

export interface HashOptions {
  /** Also compute (or fetch from the stat cache) the SHA-256; both digests come from one read. */
  readonly sha256?: boolean;
  /** Reports bytes read, for files big enough that hashing deserves a progress bar. */
  readonly onProgress?: (done: number, total: number) => void;
  /** Adds the bytes actually read (0 on a stat-cache hit), for per-node accounting. */
  readonly account?: { bytes: number };
  /**
   * Sees the file's bytes in order as this read hashes them, so a caller derives more from
   * the same read. The file is then read even when the stat cache knows its digests.
   */
  readonly observe?: ByteObserver;
}

/**
 * Takes a file's bytes in order, as a hasher reads them; each view is valid only during the
 * call. A hash hands one file's bytes either all through `update` or, when the observer has
 * `inPlace` and the file is read through the hasher's ring, all through `inPlace`.
 */
export interface ByteObserver {
  update(bytes: Uint8Array): void;
  readonly inPlace?: InPlaceObserver;
}

/** The part of a WebAssembly memory an observer reads (the project's `lib` has no DOM, where its types live). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
}

/**
 * An observer that reads a large file's bytes where the hasher's reads land: a shared
 * WebAssembly memory (the ring the SHA-256 thread hashes from), so a WebAssembly scan that
 * imports the same memory reads them without copying each piece into memory of its own.
 */
export interface InPlaceObserver {
  /** Bytes at the start of the memory that are the observer's own (tables, what it keeps between pieces). */
  readonly ownBytes: number;
  /** Bytes just before each piece that the observer may write during `updateAt`: room to put what it kept of the previous piece in front of it. */
  readonly gapBytes: number;
  /** The memory (shared, so `buffer` is a SharedArrayBuffer), once, before the first `updateAt`. */
  attach(memory: WasmMemory): void;
  /** The file's next bytes, at [offset, offset + length) of the memory: valid, with the gap before them, only during the call. */
  updateAt(offset: number, length: number): void;
}

/**
 * Derives a file from an output's bytes in the read that hashes the output after its node
 * ran (a chunk index from an image): `finish` gets the digest once every byte went through
 * `update`, and is not called when the read failed.
 */
export interface OutputObserver extends ByteObserver {
  finish(digest: FileDigest): Promise<void>;
}

export interface FileHasher {
  hash(absolutePath: string, options?: HashOptions): Promise<FileDigest>;
  /**
   * The digest when it is known without reading the file (a stat-cache hit), answered
   * synchronously; undefined when only `hash` can tell. Throws as `hash` does for a
   * missing file. A no-op run asks this for every input and output of every node.
   */
  known?(absolutePath: string, options?: Pick<HashOptions, 'sha256'>): FileDigest | undefined;
}

/** A child process run with an argument array (never a shell string). */
export interface ExecOptions {
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Each line of stdout/stderr; by default lines go to the node's log. */
  readonly onLine?: (line: string) => void;
  /** Text written to stdin. */
  readonly input?: string;
  /** Do not throw on a non-zero exit; the result carries the code. */
  readonly nothrow?: boolean;
  /** Also stops the program (a timeout), beside the signal it is bound to. */
  readonly signal?: AbortSignal;
}

/** Runs a program with an argument array, bound to an abort signal: `TaskContext.exec`. */
export type Exec = (file: string, args: readonly string[], options?: ExecOptions) => Promise<ExecResult>;

/**
 * How the engine starts every program a task runs: `execFile` (src/exec.ts) in a real run;
 * in a test, a fake that answers as the program would, as Ninja's build_test.cc gives its
 * Builder a FakeCommandRunner. `signal` stops the program; `options.onLine` gets its lines.
 */
export type ProcessRunner = (file: string, args: readonly string[], signal: AbortSignal, options: ExecOptions) => Promise<ExecResult>;

export interface ExecResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * What a running task sees. Tasks report through it and never touch the terminal,
 * argv or the renderer directly.
 */
export interface TaskContext {
  readonly id: NodeId;
  /** Absolute path of the project root; node paths are relative to it. */
  readonly root: string;
  /** Aborted on Ctrl-C/SIGTERM or fail-fast; child processes started by `exec` are killed. */
  readonly signal: AbortSignal;
  /** True when `--force` selected this node. */
  readonly force: boolean;
  /** Run-wide switches the user gave that kinds interpret (`offline`, `refreshBase`, ...). */
  readonly flags: Readonly<Record<string, boolean | string | undefined>>;
  /** Appends a line to the node's log file; the latest line shows under the task. */
  log(line: string): void;
  /** Sets the short status shown under the task without logging it. */
  status(text: string): void;
  /**
   * Byte progress; the renderer turns it into a bar with speed and ETA. A tool that reports
   * only how far along it is (qemu-img -p) passes `'percent'`: `done` of `total` are then
   * percentage points, shown as a percentage and never as bytes.
   */
  progress(done: number, total?: number, unit?: ProgressUnit): void;
  /** Absolute path of this run's log file for the node. */
  readonly logFile: string;
  /** Hashes through the persistent stat cache (no bytes read for unchanged files). */
  readonly hasher: FileHasher;
  /**
   * A temp path next to `finalPath` (same directory, so a rename is atomic). It is removed
   * if the node fails or is interrupted and it still exists.
   */
  tempPath(finalPath: string): string;
  /**
   * Call right before replacing the node's outputs: removes the node's stamp (and key file)
   * so that an interruption between two renames can never leave old stamp + new outputs.
   */
  beginCommit(): Promise<void>;
  /** Runs a program with an argument array; killed (whole process group) on abort. */
  readonly exec: Exec;
}

export { exitCodeOf, Failure, isFailure, isCancellation, toFailure, type FailureKind } from './failure.ts';

/**
 * A key file in a format another tool reads (the build's `.cache-key`). When a node has
 * one, freshness requires the file to hold exactly `compute()`; the engine writes it last.
 */
export interface KeyFile {
  /** Relative to the root. */
  readonly path: string;
  compute(hasher: FileHasher, root: string): Promise<string>;
}

/**
 * Volatile state outside the tree that the node's output depends on (an upstream
 * checksum list). Evaluated once per run; its value is part of the fingerprint.
 */
export type Probe = (context: ProbeContext) => Promise<ProbeResult>;

export interface ProbeContext {
  readonly root: string;
  readonly flags: Readonly<Record<string, boolean | string | undefined>>;
  readonly signal: AbortSignal;
  /** The probe value recorded by the node's last successful run, if any. */
  readonly previous: string | undefined;
}

export interface ProbeResult {
  readonly value: string;
  /** Said to the user alongside the verdict (e.g. "upstream unreachable; using cached file"). */
  readonly note?: string;
}

/** One node of the graph, fully resolved. Task kinds build these; configs declare them. */
export interface NodeDef {
  readonly id: NodeId;
  /** Task kind name, part of the fingerprint. */
  readonly kind: string;
  readonly description?: string;
  readonly deps: readonly NodeId[];
  /** Kind parameters; any change makes the node stale. Never put secrets here. */
  readonly params?: Json;
  /** Globs relative to the root (fast-glob); the matched files' contents are inputs. */
  readonly inputs?: readonly string[];
  /** Exact input files relative to the root; a missing one is an error, not a skip. */
  readonly files?: readonly string[];
  /** Environment variable names whose values are inputs (stored hashed, never in clear). */
  readonly env?: readonly string[];
  /** Files (relative to the root) the node produces; checked for existence and content. */
  readonly outputs?: readonly string[];
  /** Outputs whose SHA-256 downstream nodes will want: computed in the same read. */
  readonly sha256Outputs?: readonly string[];
  /**
   * For an output (relative path), something to derive from its bytes in the read that
   * hashes it once the node ran (undefined: nothing). Only after a run: an output that
   * was fresh is not read again for it.
   */
  readonly observeOutput?: (path: string, absolutePath: string) => OutputObserver | undefined;
  /** Resource pool that bounds how many nodes of this kind run at once. */
  readonly pool?: string;
  /** `--force` re-runs this node (default true; a download whose upstream is unchanged opts out). */
  readonly honorsForce?: boolean;
  /** Name of the log file stem under `logs/` (default: the id with `:` replaced). */
  readonly logName?: string;
  readonly key?: KeyFile;
  readonly probe?: Probe;
  /**
   * The probe reads only state outside the graph, never what a dependency makes, so a
   * plan may evaluate it before the dependencies have run (and call the node stale when
   * its probe moved, whatever they produce). Default false: the probe of a node whose
   * dependencies have yet to run is evaluated when the node is about to run.
   */
  readonly probeIndependent?: boolean;
  /**
   * Outputs that exist with no stamp of ours (another tool made them, or the state
   * directory was lost): may the engine take them as this node's without running it?
   * The kind checks what it can (the checksum file beside an image, upstream's digest of
   * a download). Without the hook, a node with a key file is adopted on a matching key
   * alone, and one without is never adopted. The plan asks before the dependencies have
   * run (`waitingOn` names those still to run): a check that reads what they make answers
   * undefined then, for "cannot tell yet".
   */
  adopt?(context: AdoptContext): Promise<Adoption | undefined>;
  /**
   * A remote cache of the node's outputs (Bazel's remote cache, Nix's substituters): a
   * place that may hold them as the node's current inputs would make them. Asked at
   * planning for a node that is neither fresh nor forced, before its dependencies run. On
   * a hit the node fetches instead of running, and its dependencies are not needed for it:
   * one that no node running locally needs is left out of the run.
   */
  readonly remoteCache?: RemoteCache;
  /** A note `explain` prints (e.g. what the fingerprint cannot see). */
  readonly caveat?: string;
  /**
   * Setup checks for a node that will run (packer installed, a token set), before any work
   * starts: at the start of the run for nodes the plan calls stale, and for a pending one
   * once it is known to run, before it starts. Throw a `setup` Failure.
   */
  preflight?(context: PreflightContext): Promise<void>;
  /** What `--dry-run` prints for the node besides its stale reason, starting "would …". */
  describeRun?(context: PreflightContext): Promise<string | undefined>;
  /** Returns what the user should hear of the run, if anything (printed after the node, carried in --json). */
  // biome-ignore lint/suspicious/noConfusingVoidType: a run with nothing to say returns nothing (most kinds)
  run(context: TaskContext): Promise<void | RunOutcome>;
}

/** What a run found worth saying: one line, shown with the node's result. */
export interface RunOutcome {
  readonly note?: string;
}

export interface RemoteCache {
  lookup(context: RemoteLookupContext): Promise<RemoteLookup>;
}

export interface RemoteLookupContext {
  readonly root: string;
  readonly flags: Readonly<Record<string, boolean | string | undefined>>;
  readonly signal: AbortSignal;
}

/** A remote cache's answer; `note` is said to the user (why not, or a cache that cannot be read). */
export type RemoteLookup =
  | {
      readonly hit: true;
      /** Where the outputs are, for messages: `release latest of acme/images`. */
      readonly source: string;
      /** Why the node fetches, as plans say it: `would fetch from … (cache key matches)`. */
      readonly reason: string;
      /** The key file's value for outputs made from the current inputs (restored with them). */
      readonly key?: string;
      /** Network transfers bound a fetch, not the node's own pool. */
      readonly pool?: string;
      readonly note?: string;
      /**
       * Puts the outputs in place (through temp names, `beginCommit` before replacing). When
       * the remote copy cannot be used (corrupt, gone) it may run the node's own work
       * instead, its setup checks first, and says why in `note`.
       */
      fetch(context: TaskContext): Promise<{ readonly fetched: true } | { readonly fetched: false; readonly note: string }>;
    }
  | { readonly hit: false; readonly note?: string };

export interface AdoptContext {
  readonly root: string;
  readonly flags: Readonly<Record<string, boolean | string | undefined>>;
  readonly signal: AbortSignal;
  /** Hashes through the stat cache: a check that reads a big file once is free on later runs. */
  readonly hasher: FileHasher;
  /** The node's probe answer this run; undefined when it has no probe or it waits on a dependency. */
  readonly probe: ProbeResult | undefined;
  /** Dependencies that have yet to run: their outputs are not known. */
  readonly waitingOn: readonly NodeId[];
}

/** A kind's answer about outputs found with no stamp. `reason` is said to the user either way. */
export type Adoption = { readonly adopt: true; readonly reason: string } | { readonly adopt: false; readonly reason: string };

export interface PreflightContext {
  readonly root: string;
  readonly flags: Readonly<Record<string, boolean | string | undefined>>;
  /** Aborted on Ctrl-C: a check that runs a program stops it then, so the run can end. */
  readonly signal: AbortSignal;
}

/** What a node's last successful run recorded, as a task kind may read it of another node. */
export interface NodeRecord {
  /** The node's probe value then: the state outside the tree its outputs were made from. */
  readonly probe?: string;
  /** xxh64 of each output, by path relative to the root. */
  readonly outputs: Readonly<Record<string, string>>;
  /** When that run finished (ISO 8601). */
  readonly finishedAt: string;
}

/** What a config computed from where it lives is given (`export default (context) => config`). */
export interface ConfigContext {
  /** Absolute path of the project root: the config file's directory. */
  readonly root: string;
  /** The project's stat cache, the one runs and commands hash through (and save). */
  readonly hasher: FileHasher;
  /** What the node's last successful run in this tree recorded; undefined when it has none. */
  recordOf(id: NodeId): NodeRecord | undefined;
}

/** Everything the engine needs from a loaded config. */
export interface EngineConfig {
  readonly nodes: readonly NodeDef[];
  /** Target names that stand for several nodes (`all`, `publish`, `debian-12`). */
  readonly aliases?: Readonly<Record<string, readonly NodeId[]>>;
  /** Targets with an argument (`upload:{tag}`): `family:arg` expands to new nodes. */
  readonly families?: Readonly<Record<string, TargetFamily>>;
  /** Limits of named resource pools; a pool not listed is unbounded (only `--jobs` applies). */
  readonly pools?: Readonly<Record<string, number>>;
  /** Target used when none is given on the command line. */
  readonly defaultTarget?: string;
  /** Boolean switches a config's task kinds read from `flags` (`--offline`), by long name. */
  readonly flags?: Readonly<Record<string, { readonly description: string }>>;
  /**
   * Shapes `plan --json`'s job list (e.g. one CI job per image to build), given the nodes
   * that may run: the stale ones and the pending ones (their run depends on what a
   * dependency produces).
   */
  planJobs?(mayRun: readonly NodeId[]): Json;
  /** Subcommands a config adds (`verify`, `release`, `images`), parsed by the CLI. */
  readonly commands?: Readonly<Record<string, Command>>;
}

/** Option declarations in `node:util` parseArgs form. */
export type CommandOptions = Readonly<Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean; default?: string | boolean }>>;

export interface CommandIO {
  readonly root: string;
  readonly signal: AbortSignal;
  readonly json: boolean;
  /** A line for the user on stdout. */
  out(line: string): void;
  /** A line for the user on stderr (warnings, progress notes). */
  err(line: string): void;
  /** Byte progress of a named transfer, rendered as a bar on a TTY, throttled lines otherwise. */
  progress(label: string, done: number, total?: number): void;
  readonly hasher: FileHasher;
}

export interface Command {
  /** One line: `release check [--tag TAG]`. */
  readonly usage: string;
  readonly description: string;
  readonly options?: CommandOptions;
  /**
   * Its subcommands (`check`, `remove`), if any: an error under `--json` names the command
   * as `release-check`.
   */
  readonly subcommands?: readonly string[];
  /** Words after the command that select a subcommand (`release check`): handled by `run`. */
  run(args: { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] }, io: CommandIO): Promise<number>;
}

export interface TargetFamily {
  /** Shown in `--help`, e.g. `upload:{tag}`. */
  readonly usage: string;
  readonly description: string;
  /** Nodes for the argument, and the ids among them the target selects. */
  expand(argument: string): { nodes: readonly NodeDef[]; targets: readonly NodeId[] };
}
