#!/bin/sh
# Generalises a provisioned VM into a template every image shares: each VM cloned from it
# must get its own identity (machine-id, SSH host keys, hostname, DHCP identity, cloud-init
# run) and none of the build's traces (the ephemeral SSH key, apt cache, history, temp
# files, logs). docs/templates.md lists what is reset and why.
#
# Runs as root after the template's own cleanup.sh, in one of three places:
#   - the booted build VM (packer): everything runs;
#   - a chroot of an image's root (test/e2e/cleanup-chroot.ts): files and offline commands
#     run; what needs the running system (journald, fstrim) is done offline or skipped;
#   - CLEANUP_ROOT=DIR: only the files under DIR change and the commands that would change
#     the running system are reported (the demo templates run it that way on the build
#     host against a small fake root).
set -eu

root=${CLEANUP_ROOT:-/}
root=${root%/}

# Booted: this is the running system itself, not a chroot or a fake root.
booted=false
if [ -z "$root" ] && [ -d /run/systemd/system ] && ! systemd-detect-virt --quiet --chroot 2>/dev/null; then
  booted=true
fi

# Commands that change the installed system: run on "/", reported under a fake root.
live() {
  if [ -z "$root" ]; then
    "$@"
  else
    echo "cleanup-common: would run: $*"
  fi
}

installed() {
  [ -d "$root/var/lib/dpkg" ] &&
    dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

if $booted; then where=booted; elif [ -z "$root" ]; then where="/, not booted"; else where=$root; fi
echo "cleanup-common: generalising ${root:-/} ($where)"

# Modules a VM never needs, some of which log errors on every boot (floppy probing,
# psmouse on a virtio machine); the initramfs is rebuilt so they stay out of early boot.
mkdir -p "$root/etc/modprobe.d"
cat > "$root/etc/modprobe.d/vm-template-blacklist.conf" <<'CONF'
# Installed by shared/scripts/cleanup-common.sh: hardware a VM does not have.
blacklist cfg80211
blacklist floppy
blacklist joydev
blacklist psmouse
blacklist pcspkr
CONF
if installed initramfs-tools; then
  live update-initramfs -u -k all
fi

# A later grub-pc upgrade would ask on which disk to install GRUB, since the build VM's
# disk id does not exist in clones; pre-seed "none" so unattended upgrades never stop.
if installed grub-pc; then
  if [ -z "$root" ]; then
    printf '%s\n' \
      'grub-pc grub-pc/install_devices multiselect' \
      'grub-pc grub-pc/install_devices_empty boolean true' | debconf-set-selections
  else
    echo "cleanup-common: would pre-seed grub-pc/install_devices (empty)"
  fi
fi

# apt: packages pulled in only for the build, the package cache and the lists (clones
# run apt-get update against their own mirror configuration anyway).
live apt-get -y -o DPkg::Lock::Timeout=600 autoremove --purge
live apt-get -y clean
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

# cloud-init must run again in every clone (new instance: hostname, users, keys).
live cloud-init clean --logs --seed
# What cloud-init wrote into sshd's configuration for the build's instance (ssh_pwauth
# becomes 50-cloud-init.conf): each clone's cloud-init writes its own.
rm -f "$root/etc/ssh/sshd_config.d/50-cloud-init.conf"

# The build's ephemeral key must not grant access to clones.
rm -f "$root/root/.ssh/authorized_keys"
for home in "$root/home/"*; do
  if [ -d "$home" ]; then rm -f "$home/.ssh/authorized_keys"; fi
done

# The build's journal. journald holds its live files open in the booted VM, and truncating
# them under it corrupts the journal: the live files are rotated (closed cleanly) and the
# archives vacuumed, before the machine-id goes (journalctl finds this machine's journal
# by it). Offline nothing holds them, so they go.
if $booted; then
  journalctl --rotate
  # --vacuum-time keeps archives holding entries newer than the limit: let a second pass.
  sleep 2
  journalctl --vacuum-time=1s
elif [ -d "$root/var/log/journal" ]; then
  find "$root/var/log/journal" -type f \( -name '*.journal' -o -name '*.journal~' \) -delete
fi

# An empty machine-id makes systemd generate a new one on first boot; a missing file
# would make it treat the boot as "first boot" with presets, which cloud images avoid.
if [ -e "$root/etc/machine-id" ]; then
  : > "$root/etc/machine-id"
fi
if [ -f "$root/var/lib/dbus/machine-id" ] && [ ! -L "$root/var/lib/dbus/machine-id" ]; then
  rm -f "$root/var/lib/dbus/machine-id"
  ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
fi

# Clones regenerate host keys on first boot (cloud-init's ssh module, sshd-keygen on
# trixie); shared keys would let one clone impersonate another.
rm -f "$root/etc/ssh/ssh_host_"*

# The build VM's name (meta-data's local-hostname) would otherwise be each clone's name
# until cloud-init renames it, and stays in /etc/hosts. The Debian cloud images ship
# "localhost"; names of the build VM are taken out of /etc/hosts (a line left without a
# name goes).
build_host=
if [ -s "$root/etc/hostname" ]; then build_host=$(head -n 1 "$root/etc/hostname"); fi
echo localhost > "$root/etc/hostname"
if [ -n "$build_host" ] && [ "$build_host" != localhost ] && [ -f "$root/etc/hosts" ]; then
  awk -v name="$build_host" '
    /^[[:space:]]*(#|$)/ { print; next }
    {
      line = $1; names = 0
      for (i = 2; i <= NF; i++) {
        if (substr($i, 1, 1) == "#") { for (; i <= NF; i++) line = line " " $i; break }
        if ($i == name || index($i, name ".") == 1) continue
        line = line " " $i; names++
      }
      if (names > 0) print line
    }' "$root/etc/hosts" > "$root/etc/hosts.cleanup"
  cat "$root/etc/hosts.cleanup" > "$root/etc/hosts"
  rm -f "$root/etc/hosts.cleanup"
fi

# DHCP: the build network's lease (a clone would ask for the build VM's address) and
# dhcpcd's DUID (a per-machine DHCP identity).
rm -f "$root/var/lib/dhcp/"*.leases
rm -rf "$root/var/lib/dhcpcd/"*
# systemd's host secret for encrypted credentials, when something created one.
rm -f "$root/var/lib/systemd/credential.secret"

# Shell history of the build session.
rm -f "$root/root/.bash_history"
for home in "$root/home/"*; do
  if [ -d "$home" ]; then rm -f "$home/.bash_history"; fi
done

# Temp files of the build.
rm -rf "$root/tmp/"* "$root/var/tmp/"*

# Other log files are emptied (their writers expect them to exist), rotated copies removed.
if [ -d "$root/var/log" ]; then
  find "$root/var/log" -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
  find "$root/var/log" -type f ! -name '*.journal' ! -name '*.journal~' -exec truncate -s 0 {} +
fi

# Freed blocks become holes in the qcow2 (the template attaches the disk with
# discard=unmap), so the compressed image carries no deleted data. Only meaningful in
# the booted VM: in a chroot, fstrim would trim the host's filesystems.
if $booted; then
  fstrim --all --verbose || echo "cleanup-common: fstrim failed; the image keeps freed blocks"
elif [ -z "$root" ]; then
  echo "cleanup-common: not booted (chroot): no fstrim"
else
  echo "cleanup-common: would run: fstrim --all --verbose"
fi
live sync

echo "cleanup-common: done"
