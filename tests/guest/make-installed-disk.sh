#!/bin/bash
# make-installed-disk.sh GUESTDIR OUTPUT [SIZE_MIB]
#
# Makes the test guest's installed disk without a VM and without mounting
# anything: a raw image with an MBR partition table, one FAT32 partition
# holding the kernel, the initramfs, the marker and syslinux (installed by
# the host's `syslinux --offset` through mtools), and syslinux's MBR.
# Booted, it runs imgvm=disk: MARKER-OK, then WRITE-OK (it writes
# /guestw.txt, which `mtype -i OUTPUT@@1M ::guestw.txt` shows on the host).
# GUESTDIR is build-test-iso.sh's output (it is built there if needed).
set -euo pipefail
guest=${1:?usage: make-installed-disk.sh GUESTDIR OUTPUT [SIZE_MIB]}
output=${2:?usage: make-installed-disk.sh GUESTDIR OUTPUT [SIZE_MIB]}
size_mib=${3:-256}
here=$(cd "$(dirname "$0")" && pwd)
log() { echo "make-installed-disk: $*" >&2; }

"$here/build-test-iso.sh" "$guest" >/dev/null
for tool in mkfs.fat:dosfstools mcopy:mtools syslinux:syslinux sfdisk:fdisk; do
	command -v "${tool%%:*}" >/dev/null 2>&1 || { log "needs ${tool#*:} (make deps)"; exit 1; }
done
[ "$size_mib" -ge 64 ] || { log "size must be at least 64 MiB"; exit 1; }
. "$guest/guest.env"

tmp=$(mktemp -d /tmp/make-installed-disk.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
disk=$tmp/disk.raw
start=2048 # sectors: the partition starts at 1 MiB
truncate -s "${size_mib}M" "$disk"
echo "start=$start, type=c, bootable" | sfdisk -q --label dos "$disk"
part_kib=$(((size_mib - 1) * 1024))
mkfs.fat -F 32 -n IMGVMDISK --offset $start "$disk" $part_kib >/dev/null
fat="$disk@@$((start * 512))"
zcat "$guest/marker.gz" >"$tmp/marker.bin"
echo "$MARKER_SHA256  marker.bin" >"$tmp/marker.sha256"
cat >"$tmp/syslinux.cfg" <<EOF
DEFAULT disk
PROMPT 0
TIMEOUT 1
SAY imgvm test disk (FAT, made on the host)
LABEL disk
  KERNEL /vmlinuz
  APPEND initrd=/initrd.gz console=ttyS0,115200 quiet panic=1 imgvm=disk
EOF
export MTOOLS_SKIP_CHECK=1
mcopy -i "$fat" "$guest/vmlinuz" "$guest/initrd.gz" "$tmp/marker.bin" "$tmp/marker.sha256" "$tmp/syslinux.cfg" ::/
syslinux --offset $((start * 512)) --install "$disk"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
mv "$disk" "$output"
log "$output: ${size_mib} MiB raw, FAT32 at 1 MiB, syslinux, marker $MARKER_SHA256"
