#!/bin/bash
# Images on Ceph RBD: a one-monitor, one-OSD cluster on 127.0.0.1 is
# started in a scratch folder (tests/ceph/ceph-single-node.sh) and every
# format is created on it, converted in and out, and checked with Ceph's
# own tools (rbd export, rbd du, rbd snap) and QEMU's rbd driver
# (qemu-img with rbd: names) as the independent readers and writers.
# The monitor or OSD stopped mid-way gives one line in bounded time.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
HERE=$PWD
CLUSTER=

missing=
for t in ceph-mon ceph-osd ceph rbd uuidgen qemu-img nbdcopy; do
	command -v $t >/dev/null || missing="$missing $t"
done
if [ -n "$missing" ] || ! qemu-img --help 2>/dev/null | grep -qw rbd; then
	skip "ceph" "needs ceph-mon ceph-osd ceph-common uuid-runtime nbdkit/libnbd-bin and qemu-block-extra (missing:${missing:- QEMU rbd driver}; scripts/deps.sh installs them)"
	finish
	exit $?
fi

cleanup() {
	[ -n "$CLUSTER" ] && "$HERE/tests/ceph/ceph-single-node.sh" stop "$CLUSTER" 2>/dev/null
	[ -n "${SRV_PID:-}" ] && kill "$SRV_PID" 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

CLUSTER=$T/ceph
if ! "$HERE/tests/ceph/ceph-single-node.sh" start "$CLUSTER" >"$T/ceph.env" 2>"$T/ceph.err"; then
	fail "ceph: the test cluster did not start: $(tail -1 "$T/ceph.err")"
	finish
	exit 1
fi
C=$CLUSTER/ceph.conf
R() { echo "rbd:rbd/$1:conf=$C"; }
export IMG_BACKEND_TIMEOUT=5

one_line() { [ "$(wc -l <"$1")" -eq 1 ] && grep -q '^imgtool: ' "$1"; }

# 64 MiB: random data at 4-12 MiB and 40-41 MiB, holes elsewhere
head -c $((8 << 20)) /dev/urandom >"$T/a.bin"
head -c $((1 << 20)) /dev/urandom >"$T/b.bin"
truncate -s 64M "$T/disk.raw"
dd if="$T/a.bin" of="$T/disk.raw" bs=1M seek=4 conv=notrunc status=none
dd if="$T/b.bin" of="$T/disk.raw" bs=1M seek=40 conv=notrunc status=none
SHA=$(sha256sum <"$T/disk.raw" | cut -d' ' -f1)

# ---- create -------------------------------------------------------------
"$IMGTOOL" create -f raw "$(R big)" 20G >/dev/null 2>"$T/err"
size=$(rbd -c "$C" info big --format json 2>/dev/null | sed -n 's/.*"size":\([0-9]*\).*/\1/p')
if [ "$size" = $((20 << 30)) ]; then ok "ceph: create -f raw rbd:rbd/big 20G makes a 20 GiB RBD image"; else fail "ceph: create 20G: size '$size' $(cat "$T/err")"; fi
"$IMGTOOL" create -f raw "$(R big)" 1G >/dev/null 2>"$T/err"
if [ $? -ne 0 ] && one_line "$T/err" && grep -q 'already exists' "$T/err" &&
	[ "$(rbd -c "$C" info big --format json | sed -n 's/.*"size":\([0-9]*\).*/\1/p')" = $((20 << 30)) ]; then
	ok "ceph: an existing image is never replaced: $(cat "$T/err")"
else
	fail "ceph: create over an existing image: $(cat "$T/err")"
fi

# ---- every format in and out ---------------------------------------------
for fmt in raw vdi vhd vmdk qcow2 vhdx; do
	qfmt=$fmt
	[ $fmt = vhd ] && qfmt=vpc
	if [ $fmt = qcow2 ] || [ $fmt = vhdx ]; then
		"$IMGTOOL" create -f $fmt "$T/probe.$fmt" 1M >/dev/null 2>&1 || {
			skip "ceph: $fmt" "this build has no $fmt driver"
			continue
		}
	fi
	if ! "$IMGTOOL" convert -O $fmt "$T/disk.raw" "$(R d$fmt)" 2>"$T/err"; then
		fail "ceph: convert to $fmt on RBD: $(cat "$T/err")"
		continue
	fi
	rbd -c "$C" export "d$fmt" "$T/exp.$fmt" >/dev/null 2>&1
	if qemu-img compare -f $qfmt -F raw "$T/exp.$fmt" "$T/disk.raw" >/dev/null 2>&1; then
		ok "ceph: $fmt written onto RBD, rbd export read by qemu-img: same contents"
	else
		fail "ceph: $fmt on RBD, rbd export differs"
	fi
	if qemu-img compare -f $qfmt -F raw "$(R d$fmt)" "$T/disk.raw" >/dev/null 2>&1; then
		ok "ceph: $fmt on RBD read by QEMU's rbd driver: same contents"
	else
		fail "ceph: $fmt on RBD through QEMU's rbd driver differs"
	fi
	"$IMGTOOL" convert -O raw "$(R d$fmt)" "$T/back.$fmt" 2>"$T/err"
	check "ceph: $fmt from RBD converts back byte-identical" cmp -s "$T/back.$fmt" "$T/disk.raw"
	if [ $fmt != raw ]; then
		"$IMGTOOL" check "$(R d$fmt)" >"$T/chk" 2>&1
		check "ceph: $fmt on RBD checks clean" test $? -eq 0
	fi
done
if [ "$(rbd -c "$C" export draw - 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$SHA" ]; then ok "ceph: raw on RBD: rbd export | sha256sum matches"; else fail "ceph: raw on RBD: sha256 differs"; fi
used=$(rbd -c "$C" du draw --format json 2>/dev/null | sed -n 's/.*"used_size":\([0-9]*\).*/\1/p')
if [ -n "$used" ] && [ "$used" -le $((12 << 20)) ]; then ok "ceph: convert to RBD stays sparse ($((used >> 20)) MiB used of 64)"; else fail "ceph: RBD target uses '$used' bytes"; fi
actual=$("$IMGTOOL" info --output=json "$(R draw)" 2>"$T/err" | sed -n 's/.*"actual-size": *\([0-9]*\).*/\1/p')
if [ -n "$used" ] && [ "$actual" = "$used" ]; then ok "ceph: info's disk size of an RBD image is what rbd du says is used ($used bytes)"; else fail "ceph: info actual-size '$actual', rbd du '$used': $(cat "$T/err")"; fi
"$IMGTOOL" info "$(R draw)" >"$T/info" 2>&1
check "ceph: info prints the RBD image's disk size" grep -q "^disk size: $((used >> 20)) MiB" "$T/info"
"$IMGTOOL" map "$(R draw)" >"$T/map"
if grep -q '^0x0 *0x1000000 *unallocated' "$T/map" || grep -q 'unallocated' "$T/map"; then ok "ceph: map of an RBD image shows its holes (rbd_diff_iterate2)"; else fail "ceph: map: $(tr '\n' '|' <"$T/map")"; fi
"$IMGTOOL" convert -O raw "$(R draw)" "$T/sparse-back.raw"
k=$(du -k "$T/sparse-back.raw" | cut -f1)
if [ "$k" -le 12288 ]; then ok "ceph: convert from RBD stays sparse ($k KiB)"; else fail "ceph: convert from RBD allocated $k KiB"; fi

# QEMU writes, imgtool reads
qemu-img convert -f raw -O raw "$T/disk.raw" "$(R byqemu)" 2>"$T/err"
sum=$("$IMGTOOL" checksum "$(R byqemu)" 2>&1 | cut -d' ' -f1)
if [ "$sum" = "$SHA" ]; then ok "ceph: an image qemu-img wrote to RBD has imgtool's right checksum"; else fail "ceph: checksum of qemu's image: $sum"; fi
qemu-img convert -f raw -O vdi "$T/disk.raw" "$(R byqemuvdi)" 2>"$T/err"
"$IMGTOOL" compare "$(R byqemuvdi)" "$T/disk.raw" >/dev/null 2>&1
check "ceph: a vdi qemu-img wrote to RBD compares equal in imgtool" test $? -eq 0

# random 4 KiB writes over the whole image, many in flight, then a
# round trip through QEMU's rbd driver
"$IMGTOOL" create -f raw "$(R rnd)" 64M >/dev/null
head -c $((64 << 20)) /dev/urandom >"$T/rnd.raw"
"$IMGTOOL" convert -n -m 8 -O raw "$T/rnd.raw" "$(R rnd)" 2>"$T/err"
if [ "$(rbd -c "$C" export rnd - 2>/dev/null | sha256sum)" = "$(sha256sum <"$T/rnd.raw")" ]; then ok "ceph: 64 MiB random pattern, 8 readers: rbd export sha256 matches"; else fail "ceph: random pattern differs: $(cat "$T/err")"; fi
qemu-img convert -f raw -O raw "$(R rnd)" "$T/rnd-qemu.raw" 2>/dev/null
check "ceph: qemu-img's rbd driver reads the same random pattern" cmp -s "$T/rnd-qemu.raw" "$T/rnd.raw"

# ---- snapshots -----------------------------------------------------------
rbd -c "$C" snap create draw@before >/dev/null 2>&1
"$IMGTOOL" convert -n -O raw "$T/rnd.raw" "$(R draw)" 2>"$T/err"
"$IMGTOOL" snapshot list "$(R draw)" >"$T/snaps" 2>&1
if grep -q "^before .*rbd:rbd/draw@before:conf=" "$T/snaps"; then ok "ceph: snapshot list shows the RBD snapshot"; else fail "ceph: snapshot list: $(cat "$T/snaps")"; fi
s_old=$("$IMGTOOL" checksum "$(R draw@before)" | cut -d' ' -f1)
s_new=$("$IMGTOOL" checksum "$(R draw)" | cut -d' ' -f1)
if [ "$s_old" = "$SHA" ] && [ "$s_new" = "$(sha256sum <"$T/rnd.raw" | cut -d' ' -f1)" ]; then ok "ceph: @snapshot reads the old contents, the image the new"; else fail "ceph: snapshot contents $s_old / $s_new"; fi
"$IMGTOOL" convert -n -O raw "$T/disk.raw" "$(R draw@before)" 2>"$T/err"
if [ $? -ne 0 ] && one_line "$T/err" && grep -q 'read-only' "$T/err"; then ok "ceph: a snapshot is read-only: $(cat "$T/err")"; else fail "ceph: writing a snapshot: $(cat "$T/err")"; fi

# ---- resize -------------------------------------------------------------
"$IMGTOOL" resize "$(R draw)" 128M >/dev/null 2>"$T/err"
size=$(rbd -c "$C" info draw --format json 2>/dev/null | sed -n 's/.*"size":\([0-9]*\).*/\1/p')
tail_zero=$("$IMGTOOL" compare "$(R draw)" "$T/rnd.raw" 2>&1)
if [ "$size" = $((128 << 20)) ]; then ok "ceph: resize to 128M resizes the RBD image"; else fail "ceph: resize: size '$size' $(cat "$T/err")"; fi
rbd -c "$C" export draw "$T/resized.raw" >/dev/null 2>&1
if cmp -s <(head -c 64M "$T/resized.raw") "$T/rnd.raw" && cmp -s <(tail -c 64M "$T/resized.raw") <(head -c 64M /dev/zero); then ok "ceph: resized image keeps its data and reads zeros after it"; else fail "ceph: resized contents ($tail_zero)"; fi

# ---- serve over NBD, read with nbdcopy -----------------------------------
if start_server "$T/serve.out" -r -k "$T/nbd.sock" "$(R dvmdk)" 2>/dev/null &&
	nbdcopy "$SRV_URI" "$T/served.raw" && cmp -s "$T/served.raw" "$T/disk.raw"; then
	ok "ceph: imgtool serve of a vmdk on RBD, read with nbdcopy"
else
	fail "ceph: serve rbd: $(head -3 "$T/serve.out.err")"
fi
stop_server 2>/dev/null
SRV_PID=

# ---- a second writer is refused ----------------------------------------
start_server "$T/serve2.out" -k "$T/nbd2.sock" "$(R dvdi)" 2>/dev/null
"$IMGTOOL" resize "$(R dvdi)" 128M >/dev/null 2>"$T/err"
if [ $? -ne 0 ] && one_line "$T/err"; then ok "ceph: a second writer of an RBD image is refused: $(cat "$T/err")"; else fail "ceph: second writer: $(cat "$T/err")"; fi
kill "$SRV_PID" 2>/dev/null
wait "$SRV_PID" 2>/dev/null
SRV_PID=

# ---- a failed convert removes the image it created ------------------------
if command -v nbdkit >/dev/null; then
	nbdkit -U "$T/e.sock" -P "$T/e.pid" --filter=error pattern 64M error-pread=EIO error-pread-rate=100%
	for _ in $(seq 200); do [ -s "$T/e.pid" ] && break; sleep 0.05; done
	"$IMGTOOL" convert -f raw -O vmdk "nbd+unix:///?socket=$T/e.sock" "$(R failed)" 2>"$T/err"
	rc=$?
	kill "$(cat "$T/e.pid")" 2>/dev/null
	if [ $rc -eq 1 ] && one_line "$T/err" && grep -q 'Input/output error; the incomplete target was removed$' "$T/err" &&
		! rbd -c "$C" ls | grep -qx failed && rbd -c "$C" ls | grep -qx dvdi; then
		ok "ceph: a source read error removes the RBD image the convert created: $(cat "$T/err")"
	else
		fail "ceph: source read error: rc=$rc, images: $(rbd -c "$C" ls | tr '\n' ' '): $(cat "$T/err")"
	fi
else
	skip "ceph: a failed convert removes its image" "needs nbdkit (its error filter fails the reads)"
fi

# A convert onto an image that was there before fails and leaves it as it was.
before=$(rbd -c "$C" export dvdi - 2>/dev/null | sha256sum)
"$IMGTOOL" convert -O raw "$T/disk.raw" "$(R dvdi)" 2>"$T/err"
rc=$?
if [ $rc -eq 1 ] && one_line "$T/err" && grep -q 'already exists' "$T/err" &&
	[ "$(rbd -c "$C" export dvdi - 2>/dev/null | sha256sum)" = "$before" ]; then
	ok "ceph: a convert onto an existing RBD image fails and leaves the image as it was"
else
	fail "ceph: convert onto an existing image: rc=$rc: $(cat "$T/err")"
fi

# ---- the cluster goes away -----------------------------------------------
# The OSD is stopped in the middle of a convert.  The source is read
# through nbdkit's rate filter (32 MiB/s), so the 512 MiB convert takes
# 16 s and is under way when the OSD stops a second in, however fast
# this machine writes.
head -c $((512 << 20)) /dev/urandom >"$T/src.raw"
src_sha=$(sha256sum <"$T/src.raw")
if command -v nbdkit >/dev/null; then
	nbdkit -r -U "$T/slow.sock" -P "$T/slow.pid" --filter=rate file "$T/src.raw" rate=256M
	for _ in $(seq 200); do [ -s "$T/slow.pid" ] && break; sleep 0.05; done
	start=$SECONDS
	"$IMGTOOL" convert -f raw -O raw "nbd+unix:///?socket=$T/slow.sock" "$(R victim)" 2>"$T/err" &
	cpid=$!
	sleep 1
	"$HERE/tests/ceph/ceph-single-node.sh" stop-daemon "$CLUSTER" osd.0
	wait "$cpid"
	rc=$?
	kill "$(cat "$T/slow.pid")" 2>/dev/null
	# The image cannot be removed without its OSD: the one line says so.
	if [ $rc -ne 0 ] && one_line "$T/err" && grep -q 'the incomplete target could not be removed' "$T/err" &&
		[ $((SECONDS - start)) -le 90 ] && [ "$(sha256sum <"$T/src.raw")" = "$src_sha" ]; then
		ok "ceph: OSD stopped during a convert: exit $rc in $((SECONDS - start)) s, source intact: $(cat "$T/err")"
	else
		fail "ceph: OSD stopped: rc=$rc after $((SECONDS - start)) s: $(cat "$T/err")"
	fi
else
	"$HERE/tests/ceph/ceph-single-node.sh" stop-daemon "$CLUSTER" osd.0
	skip "ceph: the OSD stopped during a convert" "needs nbdkit (its rate filter keeps the convert under way)"
fi
"$HERE/tests/ceph/ceph-single-node.sh" stop-daemon "$CLUSTER" mon.a
start=$SECONDS
timeout 120 "$IMGTOOL" convert -O raw "$T/disk.raw" "$(R aftermon)" 2>"$T/err"
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && one_line "$T/err" && [ $((SECONDS - start)) -le 60 ]; then
	ok "ceph: monitor stopped: exit $rc in $((SECONDS - start)) s: $(cat "$T/err")"
else
	fail "ceph: monitor stopped: rc=$rc after $((SECONDS - start)) s: $(cat "$T/err")"
fi

finish
