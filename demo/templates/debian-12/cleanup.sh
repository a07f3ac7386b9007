#!/bin/sh
# Demo counterpart of templates/debian-12/cleanup.sh: same job, but it only ever works on the
# fake root the demo template passes in CLEANUP_ROOT, so it cannot touch the build host.
set -eu
: "${CLEANUP_ROOT:?the demo cleanup runs only against a fake root (CLEANUP_ROOT)}"
echo "cleanup (debian-12 demo): nothing template-specific under $CLEANUP_ROOT"
