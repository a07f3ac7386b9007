#!/bin/sh
# Records the point releases inside a built image (DEBIAN_VERSION=12.13, PVE_VERSION=9.1
# or empty) as KEY=value lines. Templates run it in the VM and download the result next
# to the image as image-version.txt; release metadata and `images list` read that file.
#
# Usage: detect-versions.sh [--root DIR] [OUTPUT]
#   --root DIR  read the system installed under DIR instead of / (the demo templates run
#               it on the build host against a small fake root)
#   OUTPUT      file to write, replaced atomically (default: standard output)
set -eu

root=/
output=
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || { echo "detect-versions.sh: --root needs a directory" >&2; exit 2; }
            root=$2; shift 2 ;;
    --root=*) root=${1#--root=}; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "detect-versions.sh: unknown option $1" >&2; exit 2 ;;
    *) output=$1; shift ;;
  esac
done
root=${root%/}

# /etc/debian_version holds the point release (12.13) on a released Debian; a testing
# system says "trixie/sid", which is not a version, so fall back to os-release's major.
debian_version=
if [ -r "$root/etc/debian_version" ]; then
  debian_version=$(head -n 1 "$root/etc/debian_version")
fi
case "$debian_version" in
  [0-9]*) ;;
  *) debian_version=
     if [ -r "$root/etc/os-release" ]; then
       debian_version=$(sed -n 's/^VERSION_ID="\{0,1\}\([0-9.]*\)"\{0,1\}$/\1/p' "$root/etc/os-release")
     fi ;;
esac
if [ -z "$debian_version" ]; then
  echo "detect-versions.sh: no Debian version under ${root:-/} (etc/debian_version, etc/os-release)" >&2
  exit 1
fi

# PVE's version is pve-manager's package version (9.1.1), recorded as major.minor like
# the PVE release it belongs to. Empty when PVE is not installed.
pve_version=
if command -v dpkg-query >/dev/null 2>&1 && [ -d "$root/var/lib/dpkg" ]; then
  status=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${db:Status-Status} ${Version}' pve-manager 2>/dev/null || true)
  case "$status" in
    "installed "*) pve_version=$(echo "${status#installed }" | sed -n 's/^\([0-9]*\.[0-9]*\).*/\1/p') ;;
  esac
fi

content="DEBIAN_VERSION=$debian_version
PVE_VERSION=$pve_version"

if [ -z "$output" ]; then
  printf '%s\n' "$content"
else
  printf '%s\n' "$content" > "$output.tmp"
  mv "$output.tmp" "$output"
fi
