// The statement of a local image: the facts its store record will hold (ImageToPut: bytes,
// cache key, inputs, compression, versions), what the config says it is built with (base
// URL, template, accelerator), and what its build recorded about itself (build-facts.ts).
// An image with no recorded build facts (built before, or by the shell script) is stated
// without packer, as from this host now.
import type { ImageToPut } from '../store/store.ts';
import { type BuildFacts, runFacts, toolIdentity } from './build-facts.ts';
import { type ImageProvenance, makeStatement, type Statement } from './statement.ts';

/** What the config says an image is built from and with. */
export interface ImageBuildSettings {
  readonly baseUrl: string;
  /** The template file, relative to the root. */
  readonly template: string;
  readonly accelerator: string;
}

export function imageProvenance(image: ImageToPut, settings: ImageBuildSettings, facts: BuildFacts | undefined, env: NodeJS.ProcessEnv): ImageProvenance {
  return {
    name: image.name,
    sha256: image.sha256,
    versions: image.versions,
    cacheKey: image.cacheKey,
    ...(image.compression ? { compression: image.compression } : {}),
    accelerator: facts?.accelerator ?? settings.accelerator,
    template: settings.template,
    base: { url: settings.baseUrl, ...image.sources.base },
    files: image.sources.files,
    ...(facts?.packer ? { packer: facts.packer } : {}),
    tool: toolIdentity(),
    ...(facts?.source ? { source: facts.source } : {}),
    run: facts?.run ?? runFacts(env),
  };
}

export function imageStatement(image: ImageToPut, settings: ImageBuildSettings, facts: BuildFacts | undefined, env: NodeJS.ProcessEnv): Statement {
  return makeStatement(imageProvenance(image, settings, facts, env));
}
