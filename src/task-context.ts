// The context a running task receives: its log file, progress and status callbacks, temp
// paths cleaned up on failure, and process spawning bound to the run's abort signal.
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { siblingTempPath } from './atomic.ts';
import { execFile } from './exec.ts';
import type { ExecOptions, FileHasher, NodeId, ProcessRunner, ProgressUnit, TaskContext } from './types.ts';

export interface TaskContextOptions {
  readonly id: NodeId;
  readonly root: string;
  /** Absolute path of the log file; created on first write. */
  readonly logFile: string;
  readonly signal: AbortSignal;
  readonly hasher: FileHasher;
  readonly force?: boolean;
  readonly flags?: Readonly<Record<string, boolean | string | undefined>>;
  /** A status the task set, or the line it last logged: what shows under the task. */
  readonly onStatus?: (text: string) => void;
  /** Each line written to the log file (the task's own, or a child process's output). */
  readonly onLog?: (line: string) => void;
  readonly onProgress?: (done: number, total: number | undefined, unit: ProgressUnit) => void;
  /** Removes the node's stamp and key file (see TaskContext.beginCommit). */
  readonly onBeginCommit?: () => Promise<void>;
  /** What `exec` starts programs with; default `execFile` (a test gives a fake). */
  readonly runProcess?: ProcessRunner;
}

export interface OwnedTaskContext extends TaskContext {
  /** Removes temp paths that still exist (call after a failure or interruption). */
  removeTemps(): Promise<void>;
  /** Flushes and closes the log file. */
  close(): Promise<void>;
}

export function createTaskContext(options: TaskContextOptions): OwnedTaskContext {
  const temps = new Set<string>();
  let log: WriteStream | undefined;
  const flags = options.flags ?? {};
  const runProcess = options.runProcess ?? execFile;

  const writeLog = (line: string): void => {
    if (!log) {
      // Created lazily so nodes that log nothing leave no empty files behind.
      mkdirSync(dirname(options.logFile), { recursive: true });
      log = createWriteStream(options.logFile, { flags: 'a' });
    }
    log.write(`${line}\n`);
    options.onLog?.(line);
    options.onStatus?.(line);
  };

  return {
    id: options.id,
    root: options.root,
    signal: options.signal,
    force: options.force ?? false,
    flags,
    logFile: options.logFile,
    hasher: options.hasher,
    log(line) {
      writeLog(line);
    },
    status(text) {
      options.onStatus?.(text);
    },
    progress(done, total, unit = 'bytes') {
      options.onProgress?.(done, total, unit);
    },
    tempPath(finalPath) {
      const absolute = isAbsolute(finalPath) ? finalPath : resolve(options.root, finalPath);
      const temp = siblingTempPath(absolute);
      temps.add(temp);
      return temp;
    },
    async beginCommit() {
      await options.onBeginCommit?.();
    },
    exec(file, args, execOptions: ExecOptions = {}) {
      const signal = execOptions.signal ? AbortSignal.any([options.signal, execOptions.signal]) : options.signal;
      return runProcess(file, args, signal, { cwd: options.root, ...execOptions, onLine: execOptions.onLine ?? writeLog });
    },
    async removeTemps() {
      await Promise.all([...temps].map((path) => rm(path, { force: true, recursive: true })));
      temps.clear();
    },
    async close() {
      const stream = log;
      log = undefined;
      if (stream) await new Promise<void>((done) => stream.end(done));
    },
  };
}
