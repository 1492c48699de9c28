#!/bin/bash
# Faults: a full file system (a small tmpfs) during convert, writes, resize
# and snapshot; a read-only file system; an image locked by another writer;
# a missing parent; a parent that changed under its child.  Each must give
# a clear one-line error and a non-zero exit, leave the source untouched
# and leave the image readable (check: no corruption).
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build}
IMGTOOL=$PWD/$B/bin/imgtool
T=$(mktemp -d /tmp/faults.XXXXXX)
M=$T/small
cleanup() {
	[ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null
	mountpoint -q "$M" && umount "$M"
	rm -rf "$T"
}
trap cleanup EXIT
pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
one_line_error() { # STATUS ERRFILE: non-zero status (not a signal) and one line on stderr
	[ "$1" != 0 ] && [ "$1" -lt 128 ] && [ "$(wc -l <"$2")" = 1 ] && [ -s "$2" ]
}
has_format() { "$IMGTOOL" create -q -f "$1" "$T/probe.$1" 1M >/dev/null 2>&1; }

python3 - "$T/src.raw" <<'EOF'
import random, sys
r = random.Random(11)
with open(sys.argv[1], 'wb') as f:
    f.write(r.randbytes(24 << 20))
EOF
src_sum=$(sha256sum <"$T/src.raw")

mkdir -p "$M"
if [ "$(id -u)" != 0 ] || ! mount -t tmpfs -o size=8m tmpfs "$M" 2>/dev/null; then
	echo "skip ENOSPC cases: cannot mount a small tmpfs (needs root)"
	M=""
fi

for fmt in vdi vhd vmdk raw; do
	has_format $fmt || { echo "skip $fmt: not in this build"; continue; }
	[ -n "$M" ] || break
	rm -rf "${M:?}"/*
	# convert onto a full file system
	"$IMGTOOL" convert -f raw -O $fmt "$T/src.raw" "$M/out.$fmt" 2>"$T/err"
	st=$?
	if one_line_error $st "$T/err" && grep -qi 'space' "$T/err" && [ "$(sha256sum <"$T/src.raw")" = "$src_sum" ]; then
		ok "$fmt: convert onto a full fs: $(cat "$T/err")"
	else
		bad "$fmt: convert onto a full fs: status $st, stderr: $(head -c 300 "$T/err")"
	fi
	rm -rf "${M:?}"/*
	# writes into an existing image until the fs fills, then check it
	[ $fmt = raw ] && continue
	"$IMGTOOL" create -q -f $fmt "$M/img.$fmt" 64M || { bad "$fmt: create on tmpfs"; continue; }
	"$IMGTOOL" convert -n -f raw -O $fmt "$T/src.raw" "$M/img.$fmt" 2>"$T/err"
	st=$?
	"$IMGTOOL" check "$M/img.$fmt" >"$T/check" 2>&1
	cst=$?
	if one_line_error $st "$T/err" && { [ $cst = 0 ] || [ $cst = 3 ]; } &&
		"$IMGTOOL" checksum "$M/img.$fmt" >/dev/null 2>&1; then
		ok "$fmt: writes fail cleanly on ENOSPC, image checks without corruption (check exit $cst)"
	else
		bad "$fmt: ENOSPC during writes: convert status $st ($(head -c 200 "$T/err")), check status $cst: $(head -c 300 "$T/check")"
	fi
	rm -rf "${M:?}"/*
	# snapshot on a full fs: FILE must stay as it was
	"$IMGTOOL" convert -f raw -O $fmt "$T/src.raw" "$M/snap.$fmt" 2>/dev/null
	if [ -e "$M/snap.$fmt" ] && "$IMGTOOL" check "$M/snap.$fmt" >/dev/null 2>&1; then
		before=$("$IMGTOOL" checksum "$M/snap.$fmt" | cut -d' ' -f1)
		dd if=/dev/zero of="$M/filler" bs=64k 2>/dev/null
		"$IMGTOOL" snapshot create "$M/snap.$fmt" s1 2>"$T/err"
		st=$?
		rm -f "$M/filler"
		after=$("$IMGTOOL" checksum "$M/snap.$fmt" 2>/dev/null | cut -d' ' -f1)
		if [ $st = 0 ] || one_line_error $st "$T/err"; then
			[ "$before" = "$after" ] && ok "$fmt: snapshot on a full fs: status $st, contents unchanged" ||
				bad "$fmt: snapshot on a full fs changed the contents"
		else
			bad "$fmt: snapshot on a full fs: status $st: $(head -c 300 "$T/err")"
		fi
	fi
	rm -rf "${M:?}"/*
done

# resize of a fixed VHD beyond the space left
if [ -n "$M" ] && has_format vhd; then
	"$IMGTOOL" create -q -f vhd -o subformat=fixed "$M/fixed.vhd" 4M
	dd if=/dev/zero of="$M/filler" bs=4k 2>/dev/null # no room left for the moved footer
	"$IMGTOOL" resize "$M/fixed.vhd" 64M 2>"$T/err"
	st=$?
	rm -f "$M/filler"
	size=$("$IMGTOOL" info --output=json "$M/fixed.vhd" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
	if one_line_error $st "$T/err" && [ "$size" = 4194304 ]; then
		ok "vhd fixed: resize beyond the free space fails, size stays 4 MiB"
	else
		bad "vhd fixed: resize on a full fs: status $st, size now $size: $(head -c 200 "$T/err")"
	fi
	rm -rf "${M:?}"/*
fi

# a read-only file system
if [ -n "$M" ] && has_format vdi; then
	"$IMGTOOL" create -q -f vdi "$M/ro.vdi" 16M
	mount -o remount,ro "$M"
	"$IMGTOOL" resize "$M/ro.vdi" 32M 2>"$T/err"
	st=$?
	"$IMGTOOL" info "$M/ro.vdi" >/dev/null 2>&1
	ist=$?
	mount -o remount,rw "$M"
	if one_line_error $st "$T/err" && [ $ist = 0 ]; then
		ok "read-only fs: resize refused ($(cat "$T/err")), info still works"
	else
		bad "read-only fs: resize status $st, info status $ist: $(head -c 200 "$T/err")"
	fi
fi

# an image locked by another writer
for fmt in vdi raw; do
	has_format $fmt || continue
	"$IMGTOOL" create -q -f $fmt "$T/locked.$fmt" 16M
	qemu-nbd -f $fmt --socket="$T/q.sock" "$T/locked.$fmt" >/dev/null 2>&1 &
	SERVER=$!
	for i in $(seq 200); do [ -S "$T/q.sock" ] && break; sleep 0.05; done
	"$IMGTOOL" resize "$T/locked.$fmt" 32M 2>"$T/err"
	st=$?
	kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; SERVER=""
	if one_line_error $st "$T/err" && grep -qi 'in use' "$T/err"; then
		ok "$fmt: locked by qemu-nbd: $(cat "$T/err")"
	else
		bad "$fmt: locked by qemu-nbd: status $st: $(head -c 200 "$T/err")"
	fi
done

# missing and changed parents
for fmt in vdi vhd vmdk; do
	has_format $fmt || continue
	d=$T/chain-$fmt; mkdir -p "$d"
	"$IMGTOOL" create -q -f $fmt "$d/base.$fmt" 16M
	"$IMGTOOL" create -q -f $fmt -b "base.$fmt" -F $fmt "$d/child.$fmt" || { bad "$fmt: create child"; continue; }
	mv "$d/base.$fmt" "$T/moved-away.$fmt" # (VDI/VHD would find it by UUID in the same dir)
	"$IMGTOOL" checksum "$d/child.$fmt" >/dev/null 2>"$T/err"
	st=$?
	if one_line_error $st "$T/err"; then ok "$fmt: missing parent: $(cat "$T/err")"; else bad "$fmt: missing parent: status $st: $(head -c 300 "$T/err")"; fi
	rm -f "$T/moved-away.$fmt"
	"$IMGTOOL" create -q -f $fmt "$d/base.$fmt" 16M # a new parent: other UUID/CID
	"$IMGTOOL" checksum "$d/child.$fmt" >/dev/null 2>"$T/err"
	st=$?
	if one_line_error $st "$T/err"; then ok "$fmt: changed parent refused: $(cat "$T/err")"; else bad "$fmt: changed parent: status $st: $(head -c 300 "$T/err")"; fi
done

echo "$pass passed, $fail failed"
[ $fail = 0 ]
