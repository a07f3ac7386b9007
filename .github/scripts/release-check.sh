#!/bin/sh
# `pipeline release check --json [ARGS…]` as a workflow step: the verdicts go to the log and
# to the step output `check` (the JSON contract's release-check object: `ok`, `stale` (the
# names of the images to build), `images` with each one's reasons and base, `decision`),
# so a job's matrix and conditions read it with fromJSON and nothing reshapes it. ARGS
# pass through: image names to check only those, `--max-age DAYS` for the scheduled rebuild.
#
# Exit 0 (every image current) and 1 (some stale) are the only answers. Anything else (2: a
# rejected token, the API unreachable, a 422, a bad config, a bug; a crash; a missing npx)
# fails the step with the tool's error in the log and sets no output, so nothing downstream
# mistakes an error for a decision. The JSON is kept under $RUNNER_TEMP, which the runner
# empties between jobs: a persistent workspace never hands one run's verdict to the next.
set -u
out="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/release-check.json"
rm -f "$out"
status=0
npx pipeline release check --json "$@" > "$out" || status=$?
cat "$out"
case "$status" in
  0 | 1) ;;
  *)
    echo "release check could not decide (exit $status): failing this step" >&2
    exit "$status"
    ;;
esac
{
  echo 'check<<RELEASE_CHECK_JSON'
  cat "$out"
  echo 'RELEASE_CHECK_JSON'
} >> "$GITHUB_OUTPUT"
