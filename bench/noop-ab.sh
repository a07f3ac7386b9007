#!/bin/sh
# Interleaved no-op timings of two builds of the CLI (say main's and a branch's), each on
# its own copy of a kept bench/noop.ts tree, with `make -q` and `node -e 0` in between, so
# both see the same machine. Prints the median wall time of each, in ms.
#
#   BENCH_KEEP=1 node --import=tsx bench/noop.ts --runs 1 --big-mib 1   # prints "kept TREE"
#   cp -a TREE TREE-a && cp -a TREE TREE-b
#   rm TREE-a/.pipeline/stat-cache.json TREE-b/.pipeline/stat-cache.json
#   sed -i "s#$PWD/dist/#/path/to/other/checkout/dist/#" TREE-a/pipeline.config.ts
#   (cd TREE-a && node /path/to/other/checkout/bin/pipeline.js); (cd TREE-b && node $PWD/bin/pipeline.js)
#   sh bench/noop-ab.sh 31 TREE-a /path/to/other/checkout/bin/pipeline.js TREE-b bin/pipeline.js
#
# Two copies, each with its stat cache made afresh: a copy's files are new inodes, so a
# stat cache copied along keeps the original paths' records beside its own, twice the
# size, and a copy measured against the original was 12 ms slower running the same code.
# Run it both ways round (a and b swapped): the machine drifts by as much as a change.
set -eu
rounds=$1 tree_a=$2 cli_a=$(realpath "$3") tree_b=$4 cli_b=$(realpath "$5")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ms() { # label dir command...: appends the wall time of command (run in dir) to $out/label
  label=$1 dir=$2
  shift 2
  start=$(date +%s%N)
  (cd "$dir" && "$@" >/dev/null 2>&1) || { echo "$label failed in $dir" >&2; exit 1; }
  echo $(( ($(date +%s%N) - start) / 1000000 )) >> "$out/$label"
}
i=0
while [ "$i" -lt "$rounds" ]; do
  ms a "$tree_a" node "$cli_a" --json
  ms b "$tree_b" node "$cli_b" --json
  ms make "$tree_b" make -q
  ms node "$tree_b" node -e 0
  i=$((i + 1))
done
for label in a b make node; do
  printf '%-5s median %s ms\n' "$label" "$(sort -n "$out/$label" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
