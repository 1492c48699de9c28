#!/bin/bash
# imgtool mount / umount on a real FUSE mount: an MBR disk with two
# partitions as a VDI, mkfs.ext4 + debugfs through partN, unmount, read the
# file back from the converted raw image.  Also mount -o loop on partN,
# fdisk on disk, GPT, logical partitions,
# holes (SEEK_DATA/SEEK_HOLE), read-only mounts and errors.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
MNT=$T/mnt
mkdir "$MNT"

if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
	skip "mount" "no /dev/fuse or fusermount3 here"
	finish
	exit
fi

cleanup() {
	mountpoint -q "$MNT" && fusermount3 -u "$MNT"
	rm -rf "$T"
}
trap cleanup EXIT

# vdi when this build has it, raw otherwise
FMT=vdi
qemu-img create -q -f vdi "$T/probe.vdi" 1M
if ! "$IMGTOOL" info "$T/probe.vdi" 2>/dev/null | grep -q "file format: vdi"; then
	skip "vdi" "no vdi driver in this build; using raw"
	FMT=raw
fi

# to_image RAW OUT: convert a raw layout into $FMT
to_image() {
	qemu-img convert -q -O "$FMT" "$1" "$2"
}

# ---- MBR, two partitions ---------------------------------------------------
truncate -s 96M "$T/mbr.raw"
printf 'label: dos\nstart=2048, size=40960, type=83\nstart=43008, size=100000, type=83\n' |
	sfdisk -q "$T/mbr.raw"
to_image "$T/mbr.raw" "$T/disk.img"
IMG=$T/disk.img

"$IMGTOOL" mount "$IMG" "$MNT"
check "mount: exits 0 and returns once mounted" mountpoint -q "$MNT"
check "mount: lists disk part1 part2" \
	test "$(ls "$MNT" | tr '\n' ' ')" = "disk part1 part2 "
check "mount: disk is the virtual size" test "$(stat -c %s "$MNT/disk")" = 100663296
check "mount: part1 is exactly 40960 sectors" \
	test "$(stat -c %s "$MNT/part1")" = $((40960 * 512))
check "mount: part2 is exactly 100000 sectors" \
	test "$(stat -c %s "$MNT/part2")" = $((100000 * 512))
fdisk -l "$MNT/disk" 2>/dev/null | grep -q "disk2 *43008 *143007 *100000"
check "mount: fdisk -l lists both partitions of disk" test $? = 0
sfdisk -d "$MNT/disk" >"$T/sfdisk.out" 2>&1
check "mount: sfdisk reads the table from disk" grep -q 'start=       43008, size=      100000' "$T/sfdisk.out"

# Holes: only the MBR block is written, so data at 0 and a hole soon after.
holes=$(python3 - "$MNT/disk" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
hole = os.lseek(fd, 0, os.SEEK_HOLE)
try:
    data = os.lseek(fd, 8 << 20, os.SEEK_DATA)
except OSError:
    data = -1
print(hole, data)
PY
)
set -- ${holes:-x x}
check "mount: SEEK_HOLE finds the hole after the MBR ($1)" test "$1" -gt 0 -a "$1" -le $((2 << 20))
check "mount: SEEK_DATA past the MBR finds no data ($2)" test "$2" = -1

mkfs.ext4 -q -F "$MNT/part2" >/dev/null 2>&1
check "mount: mkfs.ext4 on part2" test $? = 0
head -c 300000 /dev/urandom >"$T/payload"
debugfs -w -R "write $T/payload payload" "$MNT/part2" >/dev/null 2>&1
check "mount: debugfs writes a file into part2" test $? = 0
e2fsck -fn "$MNT/part2" >/dev/null 2>&1
check "mount: e2fsck on part2 is clean" test $? = 0
# mount -o loop on partN, where the kernel allows loop devices here
if [ -e /dev/loop-control ] && [ "$(id -u)" = 0 ]; then
	mkdir "$T/fs"
	if mount -o loop "$MNT/part2" "$T/fs" 2>/dev/null; then
		cp "$T/payload" "$T/fs/viloop"
		umount "$T/fs"
		check "mount: mount -o loop on part2, file written" test $? = 0
		for _ in $(seq 200); do
			losetup -j "$MNT/part2" 2>/dev/null | grep -q . || break
			sleep 0.1
		done
		e2fsck -fn "$MNT/part2" >/dev/null 2>&1
		check "mount: e2fsck clean after the loop mount" test $? = 0
	else
		skip "loop" "mount -o loop is not permitted here"
	fi
fi
check "mount: part1 untouched (zeros)" cmp -s "$MNT/part1" <(head -c $((40960 * 512)) /dev/zero)
dd if=/dev/urandom of="$T/p1" bs=64k count=4 status=none
dd if="$T/p1" of="$MNT/part1" bs=64k conv=notrunc,fsync status=none
check "mount: write + fsync through part1" test $? = 0
"$IMGTOOL" umount "$MNT"
check "umount: exits 0" test $? = 0
check "umount: no longer mounted" test "$(mountpoint -q "$MNT"; echo $?)" != 0

qemu-img convert -q -O raw "$IMG" "$T/back.raw"
check "after umount: the image opens (lock released)" test $? = 0
dd if="$T/back.raw" of="$T/p2.img" bs=512 skip=43008 count=100000 status=none
debugfs -R "dump payload $T/payload.back" "$T/p2.img" >/dev/null 2>&1
check "after umount: file read back from the converted raw image" \
	cmp -s "$T/payload" "$T/payload.back"
if [ -e "$T/fs" ]; then
	rm -f "$T/payload.back"
	debugfs -R "dump viloop $T/payload.back" "$T/p2.img" >/dev/null 2>&1
	check "after umount: the loop-mounted file is in the image" \
		cmp -s "$T/payload" "$T/payload.back"
fi
check "after umount: part1 data at its exact offset" \
	cmp -s "$T/p1" <(dd if="$T/back.raw" bs=512 skip=2048 count=512 status=none)
if [ "$FMT" = vdi ]; then
	qemu-img check -q "$IMG" >/dev/null 2>&1
	check "after umount: qemu-img check of the VDI is clean" test $? = 0
fi

# ---- read-only ------------------------------------------------------------
"$IMGTOOL" mount -o ro,allow_other "$IMG" "$MNT"
check "ro: mounted" mountpoint -q "$MNT"
check "ro: allow_other passed to the kernel" \
	grep -q " $MNT .*fuse.imgtool .*allow_other" /proc/self/mountinfo
if dd if=/dev/zero of="$MNT/part1" bs=4k count=1 conv=notrunc status=none 2>/dev/null; then
	fail "ro: writes refused"
else
	ok "ro: writes refused"
fi
check "ro: reads work" cmp -s "$T/p1" <(head -c 262144 "$MNT/part1")
"$IMGTOOL" umount "$MNT"
qemu-img convert -q -O raw "$IMG" "$T/back2.raw"
check "ro: image unchanged" cmp -s "$T/back.raw" "$T/back2.raw"

# ---- GPT and logical partitions -------------------------------------------
truncate -s 64M "$T/gpt.raw"
printf 'label: gpt\nstart=2048, size=8192\nstart=12288, size=20000\nstart=40960, size=4096\n' |
	sfdisk -q "$T/gpt.raw"
to_image "$T/gpt.raw" "$T/gpt.img"
"$IMGTOOL" mount --foreground "$T/gpt.img" "$MNT" &
fg=$!
for _ in $(seq 400); do mountpoint -q "$MNT" && break; sleep 0.05; done
check "gpt: --foreground mounts" mountpoint -q "$MNT"
check "gpt: part1 part2 part3 present" \
	test "$(ls "$MNT" | tr '\n' ' ')" = "disk part1 part2 part3 "
check "gpt: part2 exactly 20000 sectors" test "$(stat -c %s "$MNT/part2")" = $((20000 * 512))
check "gpt: part3 starts where sfdisk put it" \
	cmp -s <(dd if="$MNT/disk" bs=512 skip=40960 count=4096 status=none) "$MNT/part3"
"$IMGTOOL" umount "$MNT"
wait "$fg"
check "gpt: foreground process exits 0 after umount" test $? = 0

truncate -s 64M "$T/ext.raw"
printf 'label: dos\nstart=2048, size=4096, type=83\nstart=8192, size=100000, type=5\nstart=10240, size=8192, type=83\nstart=20480, size=16384, type=7\n' |
	sfdisk -q "$T/ext.raw"
to_image "$T/ext.raw" "$T/ext.img"
"$IMGTOOL" mount "$T/ext.img" "$MNT"
check "logical: part1 part5 part6 present" \
	test "$(ls "$MNT" | tr '\n' ' ')" = "disk part1 part5 part6 "
check "logical: part6 exactly 16384 sectors" test "$(stat -c %s "$MNT/part6")" = $((16384 * 512))
# repartition through disk: part2 appears without remounting
printf 'label: dos\nstart=2048, size=4096, type=83\nstart=6144, size=2048, type=83\n' |
	sfdisk -q --no-reread "$MNT/disk" >/dev/null 2>&1
sleep 1.1
check "repartition: new table visible" test "$(ls "$MNT" | tr '\n' ' ')" = "disk part1 part2 "
"$IMGTOOL" umount "$MNT"

# ---- errors ------------------------------------------------------------------
"$IMGTOOL" mount "$T/missing.vdi" "$MNT" 2>"$T/err"
rc=$?
check "error: missing image -> exit 1, one line" test $rc = 1 -a "$(wc -l <"$T/err")" = 1
"$IMGTOOL" mount "$IMG" "$T/payload" 2>/dev/null
check "error: mount point not a directory -> exit 1" test $? = 1
check "error: nothing left mounted" test "$(mountpoint -q "$MNT"; echo $?)" != 0
"$IMGTOOL" umount "$MNT" 2>/dev/null
check "error: umount of a non-mount fails" test $? != 0

finish
