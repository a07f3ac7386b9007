#!/bin/sh
# The e2e's stand-in for cloud.debian.org: a bootable Debian 12 (bookworm) base image made
# on this machine with mmdebstrap, published in cache/upstream/ with a SHA512SUMS that
# names it, so the base's file: download node verifies it as it verifies upstream.
#
#   cache/upstream/debian-12-e2e-amd64.qcow2    ext4 root on the whole disk (/dev/vda), no partition table
#   cache/upstream/debian-12-e2e-amd64.vmlinuz  its kernel and initrd, for QEMU -kernel/-initrd
#   cache/upstream/debian-12-e2e-amd64.initrd   (the image has no boot loader)
#   cache/upstream/SHA512SUMS
#
# qemu-guest-agent is left out on purpose: the build installs it, the boot check looks for it.
# Needs root, mmdebstrap, e2fsprogs (mkfs.ext4 -d) and qemu-img; network access to
# deb.debian.org (or MIRROR).
set -eu
cd "$(dirname "$0")/.."
name=debian-12-e2e-amd64
out=cache/upstream
mirror=${MIRROR:-http://deb.debian.org/debian}
# zstd: initramfs-tools compresses with it (gzip, its fallback, is far slower under TCG).
packages=linux-image-cloud-amd64,systemd-sysv,udev,openssh-server,cloud-init,ifupdown,isc-dhcp-client,iproute2,sudo,zstd

mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/pipeline-e2e-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

echo "make-base: $(date +%T) mmdebstrap bookworm ($packages)"
mmdebstrap --quiet --variant=minbase --include="$packages" bookworm "$work/rootfs.tar" "$mirror"
mkdir "$work/root"
tar -C "$work/root" --numeric-owner --xattrs --xattrs-include='*' -xpf "$work/rootfs.tar"
rm "$work/rootfs.tar"

root=$work/root
echo '/dev/vda / ext4 errors=remount-ro 0 1' > "$root/etc/fstab"
echo localhost > "$root/etc/hostname"
rm -f "$root/etc/resolv.conf"
install -m 0755 base/pipeline-e2e-seed "$root/usr/local/sbin/pipeline-e2e-seed"
install -m 0644 base/pipeline-e2e-seed.service "$root/etc/systemd/system/pipeline-e2e-seed.service"
mkdir -p "$root/etc/systemd/system/cloud-init-local.service.wants"
ln -sf /etc/systemd/system/pipeline-e2e-seed.service "$root/etc/systemd/system/cloud-init-local.service.wants/pipeline-e2e-seed.service"
# As a cloud image ships: no machine identity, no host keys (cloud-init makes them).
: > "$root/etc/machine-id"
rm -f "$root/etc/ssh/ssh_host_"*

set -- "$root"/boot/vmlinuz-*
[ $# -eq 1 ] || { echo "make-base: expected one kernel in /boot, found: $*" >&2; exit 1; }
version=${1##*/vmlinuz-}
cp "$root/boot/vmlinuz-$version" "$work/$name.vmlinuz"
cp "$root/boot/initrd.img-$version" "$work/$name.initrd"

echo "make-base: $(date +%T) mkfs.ext4 -d (kernel $version)"
mkfs.ext4 -q -F -L e2e-root -d "$root" "$work/disk.raw" 3G
echo "make-base: $(date +%T) qemu-img convert -c"
qemu-img convert -c -O qcow2 "$work/disk.raw" "$work/$name.qcow2"

for file in "$name.vmlinuz" "$name.initrd" "$name.qcow2"; do
  mv "$work/$file" "$out/$file.tmp" && mv "$out/$file.tmp" "$out/$file"
done
(cd "$out" && sha512sum "$name.qcow2" > SHA512SUMS.tmp && mv SHA512SUMS.tmp SHA512SUMS)
ls -l "$out"
echo "make-base: $(date +%T) done"
