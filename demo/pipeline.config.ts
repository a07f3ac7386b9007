// The offline demo: the real engine, real packer and real qemu-img on this repository's
// shared/ scripts, with demo templates that use packer's null source (no VM, no KVM) and
// an "upstream" made locally (demo/scripts/make-upstream.sh) instead of cloud.debian.org.
//
//   npx pipeline --config demo/pipeline.config.ts publish
import { defineConfig } from '@vmpipeline/pipeline';

const upstream = (file: string) => ({
  url: new URL(`./upstream/${file}`, import.meta.url).href,
  checksumsUrl: new URL('./upstream/SHA512SUMS', import.meta.url).href,
  deps: ['upstream'] as const,
});

export default defineConfig({
  steps: {
    upstream: {
      description: 'make the stand-in upstream cloud images and SHA512SUMS',
      files: ['scripts/make-upstream.sh'],
      outputs: ['upstream/debian-12-generic-amd64.qcow2', 'upstream/debian-13-generic-amd64.qcow2', 'upstream/SHA512SUMS'],
      command: ['sh', 'scripts/make-upstream.sh'],
    },
  },
  bases: {
    bookworm: upstream('debian-12-generic-amd64.qcow2'),
    trixie: upstream('debian-13-generic-amd64.qcow2'),
  },
  images: {
    'debian-12': { base: 'bookworm', description: 'Debian 12 demo image' },
    'debian-13': { base: 'trixie', description: 'Debian 13 demo image' },
    'pve-9': { base: 'trixie', description: 'Proxmox VE 9 demo image' },
  },
  templatesDir: 'templates',
  sharedDir: '../shared',
  publishDir: new URL('./publish', import.meta.url).pathname,
});
