#!/bin/bash
# valgrind.sh: the end-to-end paths of imgtool under valgrind memcheck
# (`make valgrind`): create/info/check/map/checksum/compare/convert/resize/
# snapshot/commit on every format, serve for one NBD client, mount for one
# read.  Any memcheck error or definite/indirect leak fails the case (exit
# 99 from valgrind).  One line per case, then "N passed, M failed".
# Not part of `make check`: memcheck makes every run 20-50x slower.
set -uo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
IMGTOOL=$PWD/$B/bin/imgtool
T=$(mktemp -d /tmp/valgrind.XXXXXX)
VG=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect
	--show-leak-kinds=definite,indirect --error-exitcode=99
	--track-fds=no --log-file="$T/vg.%p.log")
pass=0 fail=0
mnt=
cleanup() {
	[ -n "$mnt" ] && fusermount3 -u "$mnt" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

vg() { # NAME IMGTOOL-ARGS...: runs imgtool under memcheck
	local name=$1 st
	shift
	rm -f "$T"/vg.*.log
	timeout -k 5 600 "${VG[@]}" "$IMGTOOL" "$@" >"$T/out" 2>"$T/err"
	st=$?
	if [ $st = 99 ] || [ $st -ge 124 ]; then
		echo "FAIL $name (status $st)"
		cat "$T"/vg.*.log 2>/dev/null | head -40 | sed 's/^/    /'
		fail=$((fail + 1))
	else
		echo "ok   $name"
		pass=$((pass + 1))
	fi
	return $st
}

# A 24 MiB source with scattered data and a zero hole.
python3 - "$T/src.raw" <<'EOF'
import random, sys
r = random.Random(11)
with open(sys.argv[1], 'wb') as f:
    f.truncate(24 << 20)
    for i in range(16):
        f.seek(r.randrange(0, (24 << 20) - 70000))
        f.write(r.randbytes(r.randrange(1, 65536)))
EOF

for fmt in raw vdi vhd vmdk; do
	img=$T/a.$fmt
	vg "$fmt: create" create -q -f $fmt "$img" 24M
	vg "$fmt: convert from raw" convert -f raw -O $fmt "$T/src.raw" "$img.conv"
	vg "$fmt: info --output=json" info --output=json "$img.conv"
	vg "$fmt: check" check "$img.conv"
	vg "$fmt: map" map --output=json "$img.conv"
	vg "$fmt: checksum" checksum "$img.conv"
	vg "$fmt: compare with the source" compare "$T/src.raw" "$img.conv"
	vg "$fmt: convert to vmdk streamOptimized" convert -O vmdk -o subformat=streamOptimized "$img.conv" "$T/s.$fmt.vmdk"
	vg "$fmt: resize +8M" resize "$img" 32M
	if [ $fmt != raw ]; then
		vg "$fmt: create overlay" create -q -f $fmt -b "$img.conv" "$T/ov.$fmt"
		vg "$fmt: compare overlay" compare "$img.conv" "$T/ov.$fmt"
		vg "$fmt: commit overlay" commit "$T/ov.$fmt"
	fi
done
vg "vdi: snapshot create" snapshot create "$T/a.vdi.conv" snap1
vg "vdi: snapshot list" snapshot list "$T/a.vdi.conv"
vg "missing file: info fails cleanly" info "$T/src.raw.missing"

# serve: one NBD client reads everything, then SIGTERM.
sock=$T/nbd.sock
rm -f "$T"/vg.*.log
"${VG[@]}" "$IMGTOOL" serve --socket "$sock" --read-only "$T/a.vhd.conv" >"$T/serve.out" 2>&1 &
spid=$!
for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.2; done
if nbdcopy "nbd+unix:///?socket=$sock" "$T/served.raw" && cmp -s "$T/served.raw" "$T/src.raw"; then
	served=1
else
	served=0
fi
kill -TERM $spid 2>/dev/null
wait $spid
st=$?
if [ $served = 1 ] && [ $st != 99 ] && [ $st -lt 124 ]; then
	echo "ok   serve: nbdcopy of a VHD over NBD, then SIGTERM"
	pass=$((pass + 1))
else
	echo "FAIL serve (copied=$served status $st)"
	cat "$T"/vg.*.log "$T/serve.out" 2>/dev/null | head -40 | sed 's/^/    /'
	fail=$((fail + 1))
fi

# mount: one read through FUSE, then unmount.
if [ -e /dev/fuse ]; then
	mnt=$T/mnt
	mkdir -p "$mnt"
	rm -f "$T"/vg.*.log
	"${VG[@]}" "$IMGTOOL" mount --foreground -o ro "$T/a.vmdk.conv" "$mnt" >"$T/mount.out" 2>&1 &
	mpid=$!
	for _ in $(seq 300); do [ -e "$mnt/disk" ] && break; sleep 0.2; done
	if cmp -s "$mnt/disk" "$T/src.raw"; then read_ok=1; else read_ok=0; fi
	fusermount3 -u "$mnt"
	wait $mpid
	st=$?
	mnt=
	if [ $read_ok = 1 ] && [ $st != 99 ] && [ $st -lt 124 ]; then
		echo "ok   mount: a VMDK read through FUSE, then unmount"
		pass=$((pass + 1))
	else
		echo "FAIL mount (read=$read_ok status $st)"
		cat "$T"/vg.*.log "$T/mount.out" 2>/dev/null | head -40 | sed 's/^/    /'
		fail=$((fail + 1))
	fi
fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
