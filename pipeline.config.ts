// The images of this repository. `npx pipeline --help` lists the targets this declares.
import { defineConfig } from '@vmpipeline/pipeline';

const debianCloud = (suite: string, file: string) => ({
  url: `https://cloud.debian.org/images/cloud/${suite}/latest/${file}`,
  checksumsUrl: `https://cloud.debian.org/images/cloud/${suite}/latest/SHA512SUMS`,
});

export default defineConfig({
  bases: {
    bookworm: debianCloud('bookworm', 'debian-12-generic-amd64.qcow2'),
    trixie: debianCloud('trixie', 'debian-13-generic-amd64.qcow2'),
  },
  images: {
    'debian-12': { base: 'bookworm', description: 'Debian 12 (bookworm) cloud template' },
    'debian-13': { base: 'trixie', description: 'Debian 13 (trixie) cloud template' },
    'pve-9': {
      base: 'trixie',
      description: 'Proxmox VE 9 on Debian 13',
      caveat: 'the cache key cannot see the PVE repository state: use --force (or the scheduled all --force rebuild) to pick up PVE package updates',
    },
  },
  publishDir: '/var/lib/vz/template/iso',
  release: { repo: 'homestak-dev/packer', tag: 'latest' },
});
