#!/bin/bash
# The storage demo: create an image, write a pattern, convert it between
# every format this build has, show info and checksums, and cross-check
# with qemu-img.  Steps whose command or format is not built yet are
# skipped with a note.
set -u
cd "$(dirname "$0")/.."
B=${B:-build}
IMGTOOL=${IMGTOOL:-$PWD/$B/bin/imgtool}
W=$(mktemp -d "${TMPDIR:-/tmp}/imgtool-demo.XXXXXX")
trap 'rm -rf "$W"' EXIT
failed=0

step() { if [ -t 1 ]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi; }
run() {
	printf '$ %s\n' "$*"
	"$@" || { echo "  -> failed (exit $?)"; failed=1; return 1; }
}
has_command() { "$IMGTOOL" "$1" --help >/dev/null 2>&1; }
has_format() { "$IMGTOOL" --help | grep '^Formats:' | grep -qw "$1"; }

step "imgtool $("$IMGTOOL" --version | cut -d' ' -f2-)"
"$IMGTOOL" --help | grep '^Formats:'

step "create a 64 MiB raw image"
run "$IMGTOOL" create -f raw "$W/disk.img" 64M || exit 1

step "write a pattern: 1 MiB of text at 0, random data at 16 MiB and 40 MiB"
yes 'imgtool demo pattern' | head -c 1M | dd of="$W/disk.img" conv=notrunc status=none
head -c 2M /dev/urandom | dd of="$W/disk.img" bs=1M seek=16 conv=notrunc status=none
head -c 512K /dev/urandom | dd of="$W/disk.img" bs=512K seek=80 conv=notrunc status=none
printf '$ sha256sum disk.img\n'
want=$(sha256sum <"$W/disk.img" | cut -d' ' -f1)
echo "$want"

step "info (human and JSON)"
run "$IMGTOOL" info "$W/disk.img"
run "$IMGTOOL" info --output=json "$W/disk.img"

if has_command map; then
	step "allocation map"
	run "$IMGTOOL" map "$W/disk.img"
fi

if has_command convert; then
	for fmt in vdi vhd vmdk; do
		if ! has_format "$fmt"; then
			step "convert to $fmt: skipped ($fmt is not in this build yet)"
			continue
		fi
		step "convert raw -> $fmt -> raw"
		run "$IMGTOOL" convert -O "$fmt" "$W/disk.img" "$W/disk.$fmt" || continue
		run "$IMGTOOL" info "$W/disk.$fmt"
		run "$IMGTOOL" convert -O raw "$W/disk.$fmt" "$W/back-$fmt.img" || continue
		got=$(sha256sum <"$W/back-$fmt.img" | cut -d' ' -f1)
		if [ "$got" = "$want" ]; then
			echo "  round trip through $fmt: contents identical ($got)"
		else
			echo "  round trip through $fmt: CONTENTS DIFFER"
			failed=1
		fi
		if command -v qemu-img >/dev/null; then
			qfmt=$fmt
			[ "$fmt" = vhd ] && qfmt=vpc
			printf '$ qemu-img compare -f %s -F raw disk.%s disk.img\n' "$qfmt" "$fmt"
			qemu-img compare -f "$qfmt" -F raw "$W/disk.$fmt" "$W/disk.img" || failed=1
		fi
	done
else
	step "convert: skipped (not in this build yet)"
fi

if has_command checksum; then
	step "checksum (guest-visible contents)"
	printf '$ %s\n' "imgtool checksum disk.img"
	sum=$("$IMGTOOL" checksum "$W/disk.img" | cut -d' ' -f1)
	echo "$sum"
	if [ "$sum" = "$want" ]; then
		echo "  equals sha256sum of the raw file"
	else
		echo "  DIFFERS from sha256sum of the raw file ($want)"
		failed=1
	fi
else
	step "checksum: skipped (not in this build yet)"
fi

echo
if [ $failed -eq 0 ]; then
	echo "storage demo: all steps succeeded"
else
	echo "storage demo: some steps FAILED"
fi
exit $failed
