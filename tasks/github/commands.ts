// The subcommands a config adds for GitHub releases: `release …` and `images …`.
export { releaseCommand, staleReasons, type ImageVerdict } from './release-commands.ts';
export { imagesCommand } from './images-commands.ts';
export type { CommandDeps } from './command-support.ts';
