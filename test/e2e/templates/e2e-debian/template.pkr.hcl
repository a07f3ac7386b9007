# e2e-debian: a real image built end to end on the build host (test/e2e, `npm run e2e`).
#
# The base is the e2e's own Debian 12 image (test/e2e/scripts/make-base.sh: mmdebstrap,
# ext4 on the whole disk, no boot loader), so QEMU boots it with -kernel/-initrd taken from
# beside it. Everything else is what the production templates do, written for Debian's
# packer 1.6.6 and its built-in qemu builder (no required_plugins, no packer init):
# cloud-init NoCloud seed from the repository's shared/cloud-init files with the build's
# ephemeral key, apt in the guest, qemu-guest-agent, detect-versions.sh, image-version.txt
# downloaded next to the disk, cleanup.sh and shared/scripts/cleanup-common.sh.
#
# packer 1.6.6 has neither templatefile() nor cd_content, so the seed cannot be a cidata
# CD holding the ephemeral key. The template renders user-data.pkrtpl with replace() (the
# file's only template expression is ${ssh_public_key}; anything else stops the build)
# and hands user-data and meta-data to QEMU as fw_cfg blobs; the base image's
# pipeline-e2e-seed unit copies them into /var/lib/cloud/seed/nocloud before
# cloud-init-local runs, and `ds=nocloud` on the kernel command line enables NoCloud.
#
# Variable contract: tasks/build.ts passes exactly the first eight variables.

variable "base_image" {
  type        = string
  description = "Absolute path of the base image (qcow2); its kernel and initrd are in upstream/ beside it."
}

variable "base_checksum" {
  type        = string
  description = "Checksum of base_image: sha256:<hex> or sha512:<hex>."
}

variable "output_directory" {
  type        = string
  description = "Staging directory for the build; the build task converts the disk out of it."
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
  description = "QEMU accelerator; the e2e config passes tcg (no working nested KVM needed)."
}

variable "memory" {
  type    = number
  default = 1536
}

variable "cpus" {
  type    = number
  default = 2
}

locals {
  # cache/debian-12-e2e-amd64.qcow2 -> cache/upstream/debian-12-e2e-amd64.{vmlinuz,initrd}
  boot_prefix = "${dirname(var.base_image)}/upstream/${replace(basename(var.base_image), ".qcow2", "")}"

  # templatefile() stand-in for packer < 1.7: the one expression user-data.pkrtpl has.
  user_data_template = file("${var.shared_dir}/cloud-init/user-data.pkrtpl")
  user_data          = replace(local.user_data_template, "$${ssh_public_key}", var.ssh_public_key)
  # A template expression left over means user-data.pkrtpl grew one this template does not
  # render: fail here (file() of a path that names the problem) instead of seeding a broken user-data.
  user_data_rest    = replace(local.user_data, var.ssh_public_key, "")
  user_data_checked = length(split("$${", local.user_data_rest)) + length(split("%%{", local.user_data_rest)) == 2 ? local.user_data : file("user-data.pkrtpl has template expressions other than ssh_public_key; render them in template.pkr.hcl")
  meta_data         = file("${var.shared_dir}/cloud-init/meta-data")

  console_log = abspath("${path.root}/../../logs/${var.image_name}.console.log")
}

source "qemu" "e2e" {
  iso_url          = var.base_image
  iso_checksum     = var.base_checksum
  disk_image       = true
  use_backing_file = false
  skip_resize_disk = true
  skip_compaction  = true # the build task compresses the result with qemu-img convert -c
  format           = "qcow2"
  disk_interface   = "virtio"
  # Blocks freed in the guest (apt clean, fstrim) become holes in the qcow2.
  disk_discard       = "unmap"
  disk_detect_zeroes = "unmap"
  net_device         = "virtio-net"
  accelerator        = var.accelerator
  memory             = var.memory
  cpus               = var.cpus
  headless           = true
  output_directory   = var.output_directory
  vm_name            = "${var.image_name}.qcow2"

  # qemu option values escape a comma as two commas.
  qemuargs = [
    ["-kernel", "${local.boot_prefix}.vmlinuz"],
    ["-initrd", "${local.boot_prefix}.initrd"],
    ["-append", "root=/dev/vda rw console=ttyS0 ds=nocloud"],
    ["-fw_cfg", "name=opt/org.pipeline.nocloud/user-data,string=${replace(local.user_data_checked, ",", ",,")}"],
    ["-fw_cfg", "name=opt/org.pipeline.nocloud/meta-data,string=${replace(local.meta_data, ",", ",,")}"],
    ["-serial", "file:${local.console_log}"],
  ]

  communicator         = "ssh"
  ssh_username         = "debian"
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "8m"
  # The base has no D-Bus (minbase), so plain `systemctl poweroff` and `shutdown` fail
  # reaching logind. `--force` asks systemd itself (its private socket): processes are
  # killed and / is unmounted cleanly. `poweroff -f` (sync, no unmount) is the fallback.
  shutdown_command = "sudo systemctl --force poweroff || sudo poweroff -f"
  shutdown_timeout = "3m"
}

build {
  sources = ["source.qemu.e2e"]

  # sshd answers while cloud-init still configures the system; apt must wait for it.
  provisioner "shell" {
    inline = ["sudo cloud-init status --wait || echo 'cloud-init reported errors; continuing' >&2"]
  }

  provisioner "shell" {
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = ["DEBIAN_FRONTEND=noninteractive"]
    # As the production templates: apt waits for the apt timers (their runs hold the lists
    # lock, which `apt-get update` does not wait for), and new packages (kernels) come in.
    inline = [
      "systemctl stop apt-daily.timer apt-daily-upgrade.timer",
      "while systemctl is-active --quiet apt-daily.service apt-daily-upgrade.service; do echo 'waiting for apt-daily'; sleep 5; done",
      "apt-get update",
      "apt-get -o DPkg::Lock::Timeout=900 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -y --with-new-pkgs upgrade",
      "apt-get -o DPkg::Lock::Timeout=900 -y install --no-install-recommends qemu-guest-agent",
      "systemctl enable qemu-guest-agent || true",
      "dpkg-query -W qemu-guest-agent",
    ]
  }

  provisioner "file" {
    source      = "${var.shared_dir}/scripts/detect-versions.sh"
    destination = "/tmp/detect-versions.sh"
  }

  provisioner "shell" {
    inline = ["sh /tmp/detect-versions.sh /tmp/image-version.txt", "cat /tmp/image-version.txt"]
  }

  provisioner "file" {
    direction   = "download"
    source      = "/tmp/image-version.txt"
    destination = "${var.output_directory}/image-version.txt"
  }

  # Last: template-specific cleanup, then the shared generalisation.
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    scripts = [
      "${path.root}/cleanup.sh",
      "${var.shared_dir}/scripts/cleanup-common.sh",
    ]
  }
}
