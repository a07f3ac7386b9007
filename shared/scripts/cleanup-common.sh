#!/bin/sh
# Generalises a provisioned VM into a template every image shares: each VM cloned from it
# must get its own identity (machine-id, SSH host keys, cloud-init run) and none of the
# build's traces (the ephemeral SSH key, apt cache, history, temp files).
#
# Runs as root inside the VM, after the template's own cleanup.sh.
# CLEANUP_ROOT=DIR operates on the files under DIR instead of / and only reports the
# commands that would change the running system: the demo templates run it that way on
# the build host against a small fake root.
set -eu

root=${CLEANUP_ROOT:-/}
root=${root%/}

# System commands run only on a live system (root "/"); elsewhere they are reported.
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

echo "cleanup-common: generalising ${root:-/}"

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
live apt-get -y autoremove --purge
live apt-get -y clean
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

# cloud-init must run again in every clone (new instance: hostname, users, keys).
live cloud-init clean --logs --seed

# The build's ephemeral key must not grant access to clones.
rm -f "$root/root/.ssh/authorized_keys"
for home in "$root/home/"*; do
  if [ -d "$home" ]; then rm -f "$home/.ssh/authorized_keys"; fi
done

# An empty machine-id makes systemd generate a new one on first boot; a missing file
# would make it treat the boot as "first boot" with presets, which cloud images avoid.
if [ -e "$root/etc/machine-id" ]; then
  : > "$root/etc/machine-id"
fi
if [ -f "$root/var/lib/dbus/machine-id" ] && [ ! -L "$root/var/lib/dbus/machine-id" ]; then
  rm -f "$root/var/lib/dbus/machine-id"
  ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
fi

# Clones regenerate host keys on first boot (cloud-init ssh module); shared keys would
# let one clone impersonate another.
rm -f "$root/etc/ssh/ssh_host_"*

# Shell history of the build session.
rm -f "$root/root/.bash_history"
for home in "$root/home/"*; do
  if [ -d "$home" ]; then rm -f "$home/.bash_history"; fi
done

# Temp files and logs of the build.
rm -rf "$root/tmp/"* "$root/var/tmp/"*
if [ -d "$root/var/log" ]; then
  find "$root/var/log" -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
  find "$root/var/log" -type f -exec truncate -s 0 {} +
fi

# Freed blocks become holes in the qcow2 (the template attaches the disk with
# discard=unmap), so the compressed image carries no deleted data.
live fstrim --all --verbose || echo "cleanup-common: fstrim failed; the image keeps freed blocks"
live sync

echo "cleanup-common: done"
