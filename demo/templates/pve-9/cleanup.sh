#!/bin/sh
# Demo counterpart of templates/pve-9/cleanup.sh: same steps, but it only ever works on
# the fake root the demo template passes in CLEANUP_ROOT, so it cannot touch the host.
set -eu
root=${CLEANUP_ROOT:?the demo cleanup runs only against a fake root (CLEANUP_ROOT)}

rm -f "$root/etc/apt/sources.list.d/pve-enterprise.sources" \
      "$root/etc/apt/sources.list.d/pve-enterprise.list" \
      "$root/etc/apt/sources.list.d/ceph.sources"
if [ ! -e "$root/etc/pve-packages-preinstalled" ]; then
  echo "cleanup (pve-9 demo): /etc/pve-packages-preinstalled is missing" >&2
  exit 1
fi
echo "cleanup (pve-9 demo): done under $root"
