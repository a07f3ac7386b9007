#!/bin/sh
# Stands in for cloud.debian.org in the offline demo: small qcow2 "cloud images" and the
# SHA512SUMS list that names them, in upstream/. The demo's bases download them through
# file: URLs, so the download task's verification runs as it does against the mirror.
set -eu
cd "$(dirname "$0")/.."
mkdir -p upstream
for image in debian-12-generic-amd64 debian-13-generic-amd64; do
  qemu-img create -q -f qcow2 "upstream/$image.qcow2.tmp" 64M
  mv "upstream/$image.qcow2.tmp" "upstream/$image.qcow2"
done
(cd upstream && sha512sum debian-12-generic-amd64.qcow2 debian-13-generic-amd64.qcow2 > SHA512SUMS.tmp && mv SHA512SUMS.tmp SHA512SUMS)
echo "upstream images ready in $(pwd)/upstream"
