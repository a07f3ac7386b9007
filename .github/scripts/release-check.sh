#!/bin/sh
# `pipeline release check --json` as a workflow step: the verdicts go to the log and to the
# step output `check` (the JSON contract's release-check object: `ok`, `stale`, the names
# of the images to build, and `images` with each one's reasons), so a job's matrix and
# conditions read it with fromJSON and nothing reshapes it.
#
# Exit 0 (every image current) and 1 (some stale) are answers. 2 means the check itself
# failed (no or a rejected token, the API unreachable, a bad config): the step fails with
# the tool's one-line error in the log, and nothing downstream mistakes it for "stale".
set -u
status=0
npx pipeline release check --json > release-check.json || status=$?
cat release-check.json
if [ "$status" -gt 1 ]; then exit "$status"; fi
{
  echo 'check<<RELEASE_CHECK_JSON'
  cat release-check.json
  echo 'RELEASE_CHECK_JSON'
} >> "$GITHUB_OUTPUT"
