#!/bin/sh
# debian-12 needs nothing beyond shared/scripts/cleanup-common.sh, which runs right after this
# script. The file stays so template-specific steps have a place the cache key covers.
# Honours CLEANUP_ROOT like cleanup-common.sh (the demo runs templates on a fake root).
set -eu
echo "cleanup (debian-12): nothing template-specific under ${CLEANUP_ROOT:-/}"
