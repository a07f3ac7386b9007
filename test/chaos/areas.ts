// The chaos areas by name: what `npm run chaos` and the slice in `npm test` run.
import { buildArea, type AreaOptions } from './build-area.ts';
import type { TrialReport } from './harness.ts';
import { downloadArea, uploadArea } from './release-areas.ts';

export const CHAOS_AREAS = {
  build: buildArea,
  upload: uploadArea,
  download: downloadArea,
} satisfies Record<string, (options: AreaOptions) => Promise<TrialReport[]>>;

export type AreaName = keyof typeof CHAOS_AREAS;
