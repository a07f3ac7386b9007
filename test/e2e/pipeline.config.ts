// The end-to-end check (issue 5): a REAL image on this machine, through the real CLI.
//
//   e2e-base (mmdebstrap a bootable Debian 12 base into cache/upstream/, with SHA512SUMS)
//     -> bookworm:download (file: URL, verified against that SHA512SUMS like upstream)
//     -> e2e-debian:build (packer 1.6.6 qemu builder under TCG, templates/e2e-debian/)
//     -> e2e-debian:checksum -> e2e-debian:publish / e2e-debian:upload
//
// Driven by test/e2e/run.ts (`npm run e2e`), which also checks the tools, runs the
// GitHub loopback server, downloads the release back and boots the result. By hand:
//
//   PIPELINE_PUBLISH_DIR=/tmp/e2e-publish node bin/pipeline.js --config test/e2e/pipeline.config.ts e2e-debian:publish
import { defineConfig } from '@vmpipeline/pipeline';

const BASE = 'debian-12-e2e-amd64';
const upstream = (file: string): string => new URL(`./cache/upstream/${file}`, import.meta.url).href;

export default defineConfig({
  steps: {
    'e2e-base': {
      description: 'bootstrap a bootable Debian 12 base image with mmdebstrap (the e2e stand-in for cloud.debian.org)',
      files: ['scripts/make-base.sh', 'base/pipeline-e2e-seed', 'base/pipeline-e2e-seed.service'],
      outputs: [`cache/upstream/${BASE}.qcow2`, `cache/upstream/${BASE}.vmlinuz`, `cache/upstream/${BASE}.initrd`, 'cache/upstream/SHA512SUMS'],
      command: ['sh', 'scripts/make-base.sh'],
    },
  },
  bases: {
    bookworm: { url: upstream(`${BASE}.qcow2`), checksumsUrl: upstream('SHA512SUMS'), deps: ['e2e-base'] },
  },
  images: {
    'e2e-debian': { base: 'bookworm', description: 'Debian 12 e2e image (packer qemu builder, TCG)' },
  },
  templatesDir: 'templates',
  sharedDir: '../../shared',
  // Nested KVM is not dependable on CI runners; TCG is slow but always there.
  accelerator: 'tcg',
  publishDir: new URL('./publish', import.meta.url).pathname,
  release: { repo: 'acme/images', tag: 'latest' },
});
