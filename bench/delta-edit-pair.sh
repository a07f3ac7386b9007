#!/bin/sh
# Makes bench/delta.ts's second image pair from a real qcow2: the image as it is, and a next
# version with a ~30 MB file written, a binary replaced and a file removed in its ext4
# root (debugfs on the raw disk, as root), both compressed as the build compresses them.
#
#   sh bench/delta-edit-pair.sh IMAGE.qcow2 OUTDIR      -> OUTDIR/old.qcow2 OUTDIR/new.qcow2
#
# The disk must be a whole-disk ext4 (the e2e image is). Needs qemu-img and debugfs.
set -eu
image=$1
out=$2
mkdir -p "$out"
work=$(mktemp -d "$out/.edit-XXXXXX")
trap 'rm -rf "$work"' EXIT
qemu-img convert -O raw "$image" "$work/old.raw"
cp --sparse=always "$work/old.raw" "$work/new.raw"
# Seeded bytes, so the pair is the same from run to run.
head -c 31457280 /dev/zero | openssl enc -aes-128-ctr -nosalt -pass pass:pipeline-delta-bench 2>/dev/null > "$work/new-file"
# The replacement binary: the image's own bash with its build id and a stretch of code changed,
# as a rebuilt package would differ.
debugfs -R 'dump /usr/bin/bash '"$work/bash" "$work/old.raw" 2>/dev/null
size=$(stat -c %s "$work/bash")
printf 'pipeline-delta-bench-rebuilt-binary' | dd of="$work/bash" bs=1 seek=$((size / 3)) conv=notrunc 2>/dev/null
head -c 20000 /dev/zero | openssl enc -aes-128-ctr -nosalt -pass pass:pipeline-bash 2>/dev/null | dd of="$work/bash" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
debugfs -w "$work/new.raw" >/dev/null 2>&1 <<DEBUGFS
write $work/new-file /var/tmp/pipeline-delta-new-file
rm /usr/bin/bash
write $work/bash /usr/bin/bash
rm /var/cache/debconf/templates.dat
DEBUGFS
# Check the edits landed.
debugfs -R 'stat /var/tmp/pipeline-delta-new-file' "$work/new.raw" 2>/dev/null | grep -q 'Size: 31457280'
debugfs -R 'stat /var/cache/debconf/templates.dat' "$work/new.raw" 2>&1 | grep -q 'File not found'
for name in old new; do
  qemu-img convert -c -m 16 -O qcow2 -o compression_type=zstd "$work/$name.raw" "$out/$name.qcow2"
done
ls -l "$out/old.qcow2" "$out/new.qcow2"
