#!/bin/sh
# pve-9's part of the generalisation, run before shared/scripts/cleanup-common.sh.
# Honours CLEANUP_ROOT like cleanup-common.sh (the demo runs templates on a fake root).
set -eu

root=${CLEANUP_ROOT:-/}
root=${root%/}

# proxmox-ve adds the enterprise repositories, which need a subscription: clones use the
# no-subscription repository the build configured.
rm -f "$root/etc/apt/sources.list.d/pve-enterprise.sources" \
      "$root/etc/apt/sources.list.d/pve-enterprise.list" \
      "$root/etc/apt/sources.list.d/ceph.sources"

# The build pinned its hostname to the build network's address (see pin_hostname in
# template.pkr.hcl); clones get theirs from cloud-init.
if [ -f "$root/etc/hosts" ]; then
  sed -i '/# pipeline-build$/d' "$root/etc/hosts"
fi

if [ ! -e "$root/etc/pve-packages-preinstalled" ]; then
  echo "cleanup (pve-9): /etc/pve-packages-preinstalled is missing; the PVE install did not finish" >&2
  exit 1
fi
echo "cleanup (pve-9): done under ${root:-/}"
