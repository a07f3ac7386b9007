#!/bin/sh
# The suite's reliability check (issue 11): `npm test` RUNS times in a row (default 3)
# beside a CPU-bound process, in the current clone (make it a fresh one: git clone, npm ci).
# Prints one line per run (exit code, wall time, ava's count, load average) and exits
# non-zero if any run failed; each run's output is kept in $LOG_DIR (default a temp dir).
set -u
runs=${RUNS:-3}
log_dir=${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/pipeline-under-load-XXXXXX")}
sh -c 'while :; do :; done' &
hog=$!
trap 'kill "$hog" 2>/dev/null' EXIT INT TERM
failed=0
i=1
while [ "$i" -le "$runs" ]; do
  start=$(date +%s)
  npm test > "$log_dir/run-$i.log" 2>&1
  code=$?
  [ "$code" -eq 0 ] || failed=1
  count=$(grep -E '^ +[0-9]+ tests? (passed|failed)' "$log_dir/run-$i.log" | tr -s ' ' | tr '\n' ',')
  echo "run $i of $runs: exit $code in $(( $(date +%s) - start )) s;$count load $(cut -d' ' -f1-3 /proc/loadavg); log $log_dir/run-$i.log"
  i=$((i + 1))
done
exit "$failed"
