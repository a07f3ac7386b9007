// The shape of an image pipeline's config (PipelineConfig in config.ts) for the strict
// check `defineImagePipeline` runs: every object refuses keys it does not know, so a typo
// such as `publishdir` is an error instead of a silently ignored setting.
import { z } from 'zod';
import { configSchemas, type Holds, type SameShape } from '../src/index.ts';
import type { PipelineConfig } from './config.ts';
import { type Compression, COMPRESSIONS, isCompression } from './qemu-img.ts';
import { releaseDeclSchema } from './store/backends.ts';

const { step: stepSchema, pools: poolsSchema } = configSchemas(z);
const stringList = z.array(z.string());

const compression = z.custom<Compression>(isCompression, (value) => ({
  message: `${JSON.stringify(value)} is not a compression type; use one of ${COMPRESSIONS.map((type) => `'${type}'`).join(', ')}`,
}));

const baseSchema = z
  .object({
    url: z.string(),
    checksumsUrl: z.string(),
    file: z.string().optional(),
    deps: stringList.optional(),
  })
  .strict();

const imageSchema = z
  .object({
    base: z.string(),
    description: z.string().optional(),
    extraFiles: stringList.optional(),
    caveat: z.string().optional(),
    accelerator: z.string().optional(),
    compression: compression.optional(),
  })
  .strict();

export const pipelineConfigSchema = z
  .object({
    bases: z.record(z.string(), baseSchema),
    images: z.record(z.string(), imageSchema),
    steps: z.record(z.string(), stepSchema).optional(),
    publishDir: z.string().optional(),
    templatesDir: z.string().optional(),
    sharedDir: z.string().optional(),
    accelerator: z.string().optional(),
    compression: compression.optional(),
    release: releaseDeclSchema.optional(),
    pools: poolsSchema.optional(),
  })
  .strict();

/**
 * The schema accepts what PipelineConfig declares, no more, no less (checked when this
 * compiles). `release:` is each store backend's (tasks/store/backends.ts composes it).
 */
export type PipelineSchemaMatchesTheType = Holds<
  SameShape<ReturnType<typeof pipelineConfigSchema.omit<{ release: true }>>, Omit<PipelineConfig<string, string, string>, 'release'>>
>;
