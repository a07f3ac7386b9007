# debian-13: the Debian 13 (trixie) generic cloud image, upgraded, with
# qemu-guest-agent, generalised into a VM template.
#
# Built by `pipeline debian-13:build` (tasks/build.ts), which downloads the base image,
# passes every variable below without a default, and converts the result out of
# output_directory. The variable contract is shared by all templates and documented at
# the top of tasks/build.ts.

packer {
  required_version = ">= 1.7.0"
  required_plugins {
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.0.0"
    }
  }
}

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

source "qemu" "debian" {
  iso_url          = var.base_image
  iso_checksum     = var.base_checksum
  disk_image       = true
  use_backing_file = false
  format           = "qcow2"
  disk_size        = var.disk_size
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

  # cloud-init NoCloud seed on a CD labelled cidata: the image accepts the build's key.
  cd_label = "cidata"
  cd_content = {
    "user-data" = templatefile("${var.shared_dir}/cloud-init/user-data.pkrtpl", { ssh_public_key = var.ssh_public_key })
    "meta-data" = file("${var.shared_dir}/cloud-init/meta-data")
  }

  communicator         = "ssh"
  ssh_username         = "debian"
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "20m"
  shutdown_command     = "sudo shutdown -P now"
}

build {
  sources = ["source.qemu.debian"]

  # sshd answers while cloud-init still configures the system; apt must wait for it.
  provisioner "shell" {
    inline = ["sudo cloud-init status --wait || echo 'cloud-init reported errors; continuing' >&2"]
  }

  provisioner "shell" {
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = ["DEBIAN_FRONTEND=noninteractive"]
    inline = [
      "apt-get update",
      "apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade",
      "apt-get -y install qemu-guest-agent",
      "systemctl enable qemu-guest-agent",
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
