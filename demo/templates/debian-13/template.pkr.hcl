# Demo of templates/debian-13: Debian 13 (trixie), without a VM.
#
# Same variable contract as the production templates (documented at the top of
# tasks/build.ts), but packer's null source and shell-local provisioners run on the build
# host in a few seconds, with the Debian-packaged packer 1.6.6 and no /dev/kvm: the base
# image gets an overlay with a little written data, the repository's real
# detect-versions.sh reads a small fake root, and the cleanup scripts run against that
# fake root (CLEANUP_ROOT), never the host. The build task handles its output exactly
# like a real build's.

variable "base_image" {
  type        = string
  description = "Absolute path of the downloaded Debian generic cloud image (qcow2); packer only verifies it."
}

variable "base_checksum" {
  type        = string
  description = "Checksum of base_image: sha256:<hex> or sha512:<hex>."
}

variable "output_directory" {
  type        = string
  description = "Staging directory for the build; replaced by packer, converted out by the build task."
}

variable "image_name" {
  type        = string
  description = "Image name: the disk is written as <output_directory>/<image_name>.qcow2."
}

variable "ssh_public_key" {
  type        = string
  description = "Public half of the build's ephemeral SSH key, put into the cloud-init seed."
}

variable "ssh_private_key_file" {
  type        = string
  description = "Private half of the build's ephemeral SSH key."
}

variable "shared_dir" {
  type        = string
  description = "Absolute path of the repository's shared/ directory (cloud-init seed, scripts)."
}

variable "accelerator" {
  type        = string
  default     = "kvm"
  description = "QEMU accelerator; tcg works without /dev/kvm, many times slower."
}

variable "disk_size" {
  type    = string
  default = "4G"
}

variable "memory" {
  type    = number
  default = 2048
}

variable "cpus" {
  type    = number
  default = 2
}

source "null" "demo" {
  communicator = "none"
}

build {
  sources = ["source.null.demo"]

  provisioner "shell-local" {
    environment_vars = [
      "BASE_IMAGE=${var.base_image}",
      "BASE_CHECKSUM=${var.base_checksum}",
      "OUTPUT_DIRECTORY=${var.output_directory}",
      "IMAGE_NAME=${var.image_name}",
      "SHARED_DIR=${var.shared_dir}",
      "TEMPLATE_DIR=${path.root}",
    ]
    inline = [
      "set -eu",
      # The qemu builder verifies iso_checksum; do the same and fail with its (go-getter's)
      # message, so the build task's re-download-and-retry path runs as it would for real.
      "algorithm=$${BASE_CHECKSUM%%:*}",
      "expected=$${BASE_CHECKSUM#*:}",
      "actual=$(\"$${algorithm}sum\" \"$BASE_IMAGE\" | cut -d' ' -f1)",
      "if [ \"$actual\" != \"$expected\" ]; then printf 'Checksums did not match for %s.\\nExpected: %s\\nGot: %s\\n' \"$BASE_IMAGE\" \"$expected\" \"$actual\" >&2; exit 1; fi",
      "mkdir -p \"$OUTPUT_DIRECTORY\"",
      "disk=\"$OUTPUT_DIRECTORY/$IMAGE_NAME.qcow2\"",
      # Stand-in for provisioning: an overlay on the base with some data written into it.
      "qemu-img create -q -f qcow2 -F qcow2 -b \"$BASE_IMAGE\" \"$disk\"",
      "qemu-io -c 'write -P 0x2a 0 256k' \"$disk\"",
      # A fake root with what detect-versions.sh and the cleanup scripts look at.
      "root=\"$OUTPUT_DIRECTORY/demo-root\"",
      "mkdir -p \"$root/etc/ssh\" \"$root/etc/apt/sources.list.d\" \"$root/home/debian/.ssh\" \"$root/tmp\" \"$root/var/log\"",
      "echo '13.3' > \"$root/etc/debian_version\"",
      "echo 0123456789abcdef0123456789abcdef > \"$root/etc/machine-id\"",
      "echo demo > \"$root/etc/ssh/ssh_host_ed25519_key\"",
      "echo demo > \"$root/home/debian/.ssh/authorized_keys\"",
      "echo demo > \"$root/var/log/cloud-init.log\"",
      "sh \"$SHARED_DIR/scripts/detect-versions.sh\" --root \"$root\" \"$OUTPUT_DIRECTORY/image-version.txt\"",
      "cat \"$OUTPUT_DIRECTORY/image-version.txt\"",
      "CLEANUP_ROOT=\"$root\" sh \"$TEMPLATE_DIR/cleanup.sh\"",
      "CLEANUP_ROOT=\"$root\" sh \"$SHARED_DIR/scripts/cleanup-common.sh\"",
      "if [ -s \"$root/etc/machine-id\" ] || [ -e \"$root/etc/ssh/ssh_host_ed25519_key\" ]; then echo 'cleanup left the machine identity behind' >&2; exit 1; fi",
      "rm -rf \"$root\"",
    ]
  }
}
