#!/bin/sh
# e2e-debian: the fw_cfg NoCloud seed hook of the e2e base image served the build only
# (see template.pkr.hcl); clones get their seed the usual way (a cidata CD, as PVE attaches).
# shared/scripts/cleanup-common.sh runs right after this script.
# Honours CLEANUP_ROOT like cleanup-common.sh.
set -eu
root=${CLEANUP_ROOT:-/}
root=${root%/}
rm -f "$root/etc/systemd/system/cloud-init-local.service.wants/pipeline-e2e-seed.service" \
  "$root/etc/systemd/system/pipeline-e2e-seed.service" \
  "$root/usr/local/sbin/pipeline-e2e-seed"
echo "cleanup (e2e-debian): removed the build-only fw_cfg seed hook under ${root:-/}"
