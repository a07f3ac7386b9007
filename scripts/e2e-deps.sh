#!/bin/sh
# Installs what `npm run e2e` (test/e2e/run.ts) needs on Debian 12/13, as root:
# mmdebstrap bootstraps the base image, qemu-system-x86 boots it (TCG, no /dev/kvm needed),
# xorriso writes the boot check's cidata seed, e2fsprogs makes and reads the ext4 root,
# packer (Debian's 1.6.6 is enough) and qemu-utils build and convert the image.
set -eu
if [ "$(id -u)" -ne 0 ]; then
  echo "e2e-deps: run as root (apt-get install)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
  mmdebstrap qemu-system-x86 qemu-utils xorriso e2fsprogs packer openssh-client ca-certificates
