#!/bin/sh
# pve-9's part of the generalisation, run before shared/scripts/cleanup-common.sh (which
# resets what every image shares: machine-id, SSH host keys, hostname, cloud-init, logs).
# Here: the Proxmox identity pve-cluster made during the build, the iSCSI initiator name,
# postfix's names and TLS key, and the boot unit that gives each clone its own.
# docs/templates.md explains each step. Honours CLEANUP_ROOT like cleanup-common.sh.
set -eu

root=${CLEANUP_ROOT:-/}
root=${root%/}

booted=false
if [ -z "$root" ] && [ -d /run/systemd/system ] && ! systemd-detect-virt --quiet --chroot 2>/dev/null; then
  booted=true
fi

if [ ! -e "$root/etc/pve-packages-preinstalled" ]; then
  echo "cleanup (pve-9): /etc/pve-packages-preinstalled is missing; the PVE install did not finish" >&2
  exit 1
fi

# The build VM's name; cleanup-common.sh resets /etc/hostname after this script.
build_host=
if [ -s "$root/etc/hostname" ]; then build_host=$(head -n 1 "$root/etc/hostname"); fi

# proxmox-ve adds the enterprise repositories, which need a subscription: clones use the
# no-subscription repository the build configured.
rm -f "$root/etc/apt/sources.list.d/pve-enterprise.sources" \
  "$root/etc/apt/sources.list.d/pve-enterprise.list" \
  "$root/etc/apt/sources.list.d/ceph.sources"

# The build pinned its hostname to the build network's address (see pin_hostname in
# template.pkr.hcl); clones get theirs from pipeline-pve-identity below.
if [ -f "$root/etc/hosts" ]; then
  sed -i '/# pipeline-build$/d' "$root/etc/hosts"
fi

# --- The Proxmox identity ---------------------------------------------------------------
# pve-cluster's first start in the build ran `pvecm updatecerts`: the cluster CA
# (priv/pve-root-ca.key), the key pair that signs login tickets (priv/authkey.key), the
# CSRF key (pve-www.key), the node's certificate (nodes/<build host>/pve-ssl.*), root's SSH
# key pair, and the authorized_keys and known_hosts that /root/.ssh/authorized_keys and
# /etc/ssh/ssh_known_hosts link to (with the build's cloud-init key merged in). /etc/pve is
# pmxcfs's view of /var/lib/pve-cluster/config.db. Kept, every clone would hold the same CA
# key and root of one clone could SSH into all the others. Without the database, pmxcfs
# starts empty on a clone's first boot and pve-cluster runs updatecerts again, for the
# clone's own name. The services that write into /etc/pve or the node's RRD data stop
# first, pve-cluster last, so nothing is written back.
if $booted; then
  for unit in pve-ha-lrm pve-ha-crm pvescheduler pvestatd pveproxy spiceproxy pvedaemon pve-firewall pvefw-logger rrdcached pve-cluster; do
    if [ "$(systemctl show -P LoadState "$unit.service")" = loaded ]; then
      systemctl stop "$unit.service"
    fi
  done
fi
if mountpoint -q "$root/etc/pve" 2>/dev/null; then
  echo "cleanup (pve-9): pmxcfs is still mounted on /etc/pve; stop pve-cluster first" >&2
  exit 1
fi
rm -rf "$root/var/lib/pve-cluster/config.db" "$root/var/lib/pve-cluster/config.db-wal" \
  "$root/var/lib/pve-cluster/config.db-shm" "$root/var/lib/pve-cluster/.pmxcfs.lockfile" \
  "$root/var/lib/pve-cluster/backup"
# The mount point itself must stay, empty (only reached when pmxcfs is not mounted).
if [ -d "$root/etc/pve" ]; then
  find "$root/etc/pve" -mindepth 1 -delete
fi
rm -f "$root/root/.ssh/id_rsa" "$root/root/.ssh/id_rsa.pub" \
  "$root/root/.ssh/id_ed25519" "$root/root/.ssh/id_ed25519.pub" \
  "$root/root/.ssh/authorized_keys" "$root/root/.ssh/authorized_keys.old" \
  "$root/root/.ssh/known_hosts" "$root/root/.ssh/known_hosts.old" \
  "$root/etc/ssh/ssh_known_hosts"
# Per-node metrics, kept under the node's name.
rm -rf "$root/var/lib/rrdcached/db/pve2-node" "$root/var/lib/rrdcached/db/pve2-storage" \
  "$root/var/lib/rrdcached/db/pve2-vm" "$root/var/lib/rrdcached/db/pve-node-9.0" \
  "$root/var/lib/rrdcached/db/pve-storage-9.0" "$root/var/lib/rrdcached/db/pve-vm-9.0"

# --- iSCSI -----------------------------------------------------------------------------
# open-iscsi wrote one InitiatorName at install; targets tell initiators apart by it.
# GenerateName=yes makes iscsid's startup check (/usr/lib/open-iscsi/startup-checks.sh)
# write a new one the first time iscsid starts on a clone.
if [ -f "$root/etc/iscsi/initiatorname.iscsi" ]; then
  printf '%s\n' \
    '## Installed by templates/pve-9/cleanup.sh: iscsid generates this' \
    "## machine's InitiatorName when it first starts." \
    'GenerateName=yes' > "$root/etc/iscsi/initiatorname.iscsi"
  chmod 600 "$root/etc/iscsi/initiatorname.iscsi"
fi

# --- postfix ----------------------------------------------------------------------------
# The build's install wrote the build VM's name into myhostname, mydestination,
# /etc/mailname and the aliases database (postalias records the host as YP_MASTER_NAME).
# Without myhostname postfix takes the running hostname; mydestination keeps only names
# that follow it; /etc/mailname and /etc/aliases.db are made by pipeline-pve-identity on a
# clone's first boot. The snakeoil key (postfix's TLS key, made by ssl-cert at install)
# would be one private key for every clone: made again on first boot too.
main_cf=$root/etc/postfix/main.cf
if [ -f "$main_cf" ] && [ -n "$build_host" ]; then
  awk -v name="$build_host" '
    /^myhostname[[:space:]]*=/ { next }
    /^mydestination[[:space:]]*=/ {
      value = $0; sub(/^mydestination[[:space:]]*=[[:space:]]*/, "", value)
      n = split(value, items, /[[:space:],]+/); kept = ""
      for (i = 1; i <= n; i++) {
        if (items[i] == "" || items[i] == name || index(items[i], name ".") == 1) continue
        kept = kept (kept == "" ? "" : ", ") items[i]
      }
      print "mydestination = " kept; next
    }
    { print }' "$main_cf" > "$main_cf.cleanup"
  cat "$main_cf.cleanup" > "$main_cf"
  rm -f "$main_cf.cleanup"
fi
rm -f "$root/etc/mailname" "$root/etc/aliases.db" \
  "$root/etc/ssl/private/ssl-cert-snakeoil.key" "$root/etc/ssl/certs/ssl-cert-snakeoil.pem"

# --- The boot unit ----------------------------------------------------------------------
# pmxcfs refuses a node name that resolves to a loopback address, and cloud-init's
# manage_etc_hosts (set by the user-data Proxmox generates) maps the hostname to
# 127.0.1.1 on every boot. pipeline-pve-identity runs on every boot, after cloud-init and
# the network and before pve-cluster and postfix: it maps the host's names to its primary
# address, and makes a missing /etc/mailname, aliases database and snakeoil certificate.
mkdir -p "$root/usr/local/sbin" "$root/etc/systemd/system/multi-user.target.wants"
cat > "$root/usr/local/sbin/pipeline-pve-identity" <<'SCRIPT'
#!/bin/sh
# Installed by the pipeline's templates/pve-9/cleanup.sh; run by
# pipeline-pve-identity.service on every boot, before pve-cluster and postfix.
#   /etc/hosts     this host's names map to its primary address (the source address of
#                  the default route, else the first global address), not to a loopback
#                  address: pmxcfs refuses to start otherwise, and cloud-init's
#                  manage_etc_hosts writes 127.0.1.1 for the hostname on every boot.
#   /etc/mailname  postfix's origin, written from the FQDN when missing (first boot).
#   aliases.db     postfix's aliases database, built when missing (first boot).
#   snakeoil       ssl-cert's key and certificate (postfix TLS), made when missing.
set -eu
marker='# pipeline-pve-identity'
short=$(hostname --short)
fqdn=$(hostname --fqdn 2>/dev/null || true)
if [ "$fqdn" = "$short" ] || [ "$fqdn" = localhost ]; then fqdn=; fi

primary_address() {
  for probe in 192.0.2.1 2001:db8::1; do
    address=$(ip route get "$probe" 2>/dev/null | sed -n 's/.* src \([^ ]*\).*/\1/p' | head -n 1)
    if [ -n "$address" ]; then echo "$address"; return; fi
  done
  ip -o addr show scope global | awk '{ split($4, a, "/"); print a[1]; exit }'
}

if [ "$short" = localhost ]; then
  echo "pipeline-pve-identity: the hostname is still localhost; /etc/hosts left as it is"
else
  address=$(primary_address)
  if [ -z "$address" ]; then
    echo "pipeline-pve-identity: no global address; pve-cluster cannot resolve $short to a non-loopback address" >&2
  else
    names="$short"
    if [ -n "$fqdn" ]; then names="$fqdn $short"; fi
    tmp=$(mktemp /etc/hosts.pipeline.XXXXXX)
    # Earlier boots' lines go; loopback lines lose this host's names (a line left
    # without a name goes); one line maps the names to the address.
    awk -v short="$short" -v fqdn="$fqdn" -v marker="$marker" '
      index($0, marker) { next }
      /^[[:space:]]*(#|$)/ { print; next }
      $1 ~ /^127\./ || $1 == "::1" {
        line = $1; names = 0
        for (i = 2; i <= NF; i++) {
          if (substr($i, 1, 1) == "#") { for (; i <= NF; i++) line = line " " $i; break }
          if ($i == short || (fqdn != "" && $i == fqdn)) continue
          line = line " " $i; names++
        }
        if (names > 0) print line
        next
      }
      { print }' /etc/hosts > "$tmp"
    printf '%s %s %s\n' "$address" "$names" "$marker" >> "$tmp"
    chmod 644 "$tmp"
    mv "$tmp" /etc/hosts
    echo "pipeline-pve-identity: /etc/hosts maps $names to $address"
  fi
fi

if [ -d /etc/postfix ] && [ ! -e /etc/mailname ]; then
  echo "${fqdn:-$short}" > /etc/mailname
  echo "pipeline-pve-identity: /etc/mailname is ${fqdn:-$short}"
fi
if [ -e /etc/aliases ] && [ ! -e /etc/aliases.db ] && command -v newaliases >/dev/null; then
  newaliases
  echo "pipeline-pve-identity: built /etc/aliases.db"
fi
if [ ! -e /etc/ssl/private/ssl-cert-snakeoil.key ] && command -v make-ssl-cert >/dev/null; then
  make-ssl-cert generate-default-snakeoil
  echo "pipeline-pve-identity: made this machine's snakeoil key and certificate"
fi
SCRIPT
chmod 755 "$root/usr/local/sbin/pipeline-pve-identity"
cat > "$root/etc/systemd/system/pipeline-pve-identity.service" <<'UNIT'
# Installed by the pipeline's templates/pve-9/cleanup.sh.
[Unit]
Description=Map this node's name to its address, make its mailname, aliases and snakeoil key
Documentation=file:/usr/local/sbin/pipeline-pve-identity
Wants=network-online.target
After=network-online.target cloud-init-network.service cloud-init.service
Before=pve-cluster.service postfix.service postfix@-.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/pipeline-pve-identity

[Install]
WantedBy=multi-user.target
UNIT
# What `systemctl enable` does for WantedBy=multi-user.target, the same way in the VM, a
# chroot and a fake root.
ln -sf /etc/systemd/system/pipeline-pve-identity.service \
  "$root/etc/systemd/system/multi-user.target.wants/pipeline-pve-identity.service"

echo "cleanup (pve-9): done under ${root:-/}"
