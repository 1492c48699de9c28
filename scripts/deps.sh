#!/bin/bash
# Installs every Debian 12 package the build, the tests, the demo and the
# benchmarks need.  Quiet and quick when all are present.
set -euo pipefail
PKGS=(
	build-essential pkg-config clang clang-format
	zlib1g-dev libssl-dev libfuse3-dev fuse3 libnbd-dev libnbd-bin nbdkit
	libcriterion-dev
	qemu-utils qemu-system-x86 seabios
	libvhdi-utils libvmdk-utils
	busybox-static isolinux syslinux-common extlinux xorriso cpio kmod fdisk
	syslinux
	e2fsprogs dosfstools mtools gzip bzip2 python3 socat
	grub-rescue-pc ipxe debian-installer-12-netboot-amd64
	libclang-rt-14-dev valgrind gdb
	libzstd-dev libqcow-utils
	libvncserver-dev libpng-dev libslirp-dev libglib2.0-dev ipxe-qemu
	libjson-c-dev libxml2-dev libxml2-utils libarchive-dev
	libcurl4-openssl-dev librbd-dev librados-dev
	ceph-mon ceph-osd ceph-common uuid-runtime qemu-block-extra fio
	libsdl2-dev xvfb xdotool x11-apps imagemagick
	apt-utils xz-utils
)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
	$SUDO apt-get update -q >/dev/null
	$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
