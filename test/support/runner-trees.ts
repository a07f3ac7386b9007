// Built image trees for release tests, and copies of them that stand in for separate
// machines (CI runners): each copy is its own clone with its own .pipeline state, run
// through the real CLI in its own process.
import type { ExecutionContext } from 'ava';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli, type CliResult, type RunOptions } from './engine-project.ts';
import { makeImageProject } from './image-project.ts';

export interface Tree {
  readonly root: string;
  run(args: readonly string[], options?: RunOptions): Promise<CliResult>;
  path(relative: string): string;
}

function treeAt(root: string): Tree {
  return { root, run: (args, options) => startCli(root, args, options).done, path: (relative) => join(root, relative) };
}

/** Things to remove when the file's tests are done (trees outlive single tests). */
export class Trees {
  private readonly cleanups: Array<() => Promise<unknown>> = [];

  /** A tree with every image built and checksummed (real packer, real qemu-img); `extraConfig` as makeImageProject takes it. */
  async built(extraConfig = ''): Promise<Tree> {
    const shim = { teardown: (fn: () => Promise<unknown>) => void this.cleanups.push(fn) } as unknown as ExecutionContext;
    const project = await makeImageProject(shim, extraConfig);
    const result = await project.run(['all'], { timeoutMs: 300_000 });
    if (result.code !== 0) throw new Error(`building the tree failed: ${result.stderr}`);
    return treeAt(project.root);
  }

  /** A separate clone of `tree` (a copy of everything, state included), as another machine would have. */
  async copy(tree: Tree, label: string): Promise<Tree> {
    const root = await mkdtemp(join(tmpdir(), `pipeline-${label}-`));
    this.cleanups.push(() => rm(root, { recursive: true, force: true }));
    await cp(tree.root, root, { recursive: true });
    return treeAt(root);
  }

  /** Makes `image` in `tree` build to different bytes, and builds it. */
  async rebuildDifferently(tree: Tree, image: string): Promise<void> {
    const template = tree.path(`templates/${image}/template.pkr.hcl`);
    await writeFile(template, (await readFile(template, 'utf8')).replace('write -P 0x2a', 'write -P 0x3b'));
    const result = await tree.run([image], { timeoutMs: 300_000 });
    if (result.code !== 0) throw new Error(`rebuilding ${image} failed: ${result.stderr}`);
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.cleanups.splice(0).map((fn) => fn()));
  }
}
