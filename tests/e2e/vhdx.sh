#!/bin/bash
# End-to-end: the VHDX driver against qemu-img (both directions, every
# subformat and option), vhdiinfo and vhdimount (libvhdi), a real
# Disk2VHD image, differencing chains (relative and absolute locators,
# data write GUID), the log (our pending log replayed by qemu and by us),
# imgtool info/check/convert/map/compare/resize, and hostile images.
# Images are driven through imgtool and tests/helpers/vhd_io (libimg
# directly; it probes the format).
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
IO=${VHD_IO:-$PWD/$B/tests/helpers/vhd_io}
FIX=$PWD/tests/fixtures/vhdx
MiB=1048576

qcheck() { qemu-img check -f vhdx "$1" 2>&1 | grep -q 'No errors were found'; }

[ -x "$IO" ] || { fail "vhd_io helper not built ($IO)"; finish; exit 1; }

# ---- a real image: Sysinternals Disk2VHD -----------------------------------
bzcat "$FIX/test-disk2vhd.vhdx.bz2" >"$T/d2v.vhdx"
if "$IO" read "$T/d2v.vhdx" "$T/out.raw" &&
	[ "$(sha "$T/out.raw")" = 96d964042be9b58dda1725567abfb0cf9fd8380e2118754afa979c2ad445938a ] &&
	[ "$(vsize "$T/d2v.vhdx")" = 268435456 ]; then
	ok "real Disk2VHD image: 256 MiB, reads to qemu-img's sha256"
else
	fail "real Disk2VHD image"
fi
check "real Disk2VHD image: check clean" "$IMGTOOL" check -q "$T/d2v.vhdx"
rm -f "$T/d2v.vhdx" "$T/out.raw"

# ---- images made by qemu-img 7.2, and one of ours with a pending log -------
while read -r name want; do
	zcat "$FIX/$name.vhdx.gz" >"$T/$name.vhdx"
	before=$(sha "$T/$name.vhdx")
	if "$IO" read "$T/$name.vhdx" "$T/out.raw" && [ "$(sha "$T/out.raw")" = "$want" ] &&
		[ "$(sha "$T/$name.vhdx")" = "$before" ]; then
		ok "fixture $name reads to its recorded sha256, file untouched"
	else
		fail "fixture $name"
	fi
done <<'EOF'
qemu-dynamic-1M 1a35eb39880bedd6596c3dfeb696eaa05184a4e46e69c458cff66c94be7f9e0b
qemu-fixed 0e93d8fc3429e58de222c817ecba4d0747c66b1430b21d8ebe68dc492f446ef0
pending-log 99c9bef9a6998c9a2dc1c5c57b6fdf1e68c404a7103985a0cf19fd2dea98edbb
EOF
check "fixture qemu-fixed: info says fixed" bash -c "'$IMGTOOL' info '$T/qemu-fixed.vhdx' | grep -q 'subformat: fixed'"
check "fixture pending-log: check reports the log, info marks it" bash -c \
	"'$IMGTOOL' check '$T/pending-log.vhdx' 2>&1 | grep -q 'not yet replayed' && '$IMGTOOL' info '$T/pending-log.vhdx' | grep -q 'log_pending: true'"
if "$IMGTOOL" check -q -r all "$T/pending-log.vhdx" && "$IMGTOOL" check -q "$T/pending-log.vhdx" && qcheck "$T/pending-log.vhdx" &&
	"$IO" read "$T/pending-log.vhdx" "$T/out.raw" && [ "$(sha "$T/out.raw")" = 99c9bef9a6998c9a2dc1c5c57b6fdf1e68c404a7103985a0cf19fd2dea98edbb ]; then
	ok "fixture pending-log: check -r all replays it on disk; clean for us and qemu, same data"
else
	fail "fixture pending-log replay on disk"
fi
rm -f "$T"/*.vhdx "$T/out.raw"

# ---- round trips with qemu-img: every subformat and option -----------------
# Sizes: whole blocks, a hidden tail (not a multiple of the block), and one
# over 1 GiB (16 MiB default blocks).
for size in 64M $((100 * MiB + 3 * 512)) $((1024 * MiB + 5 * MiB + 512)); do
	"$IO" pattern "$T/p.raw" "$size" 7
	for opts in subformat=dynamic subformat=fixed subformat=dynamic,block_size=1M \
		subformat=dynamic,block_size=256M subformat=fixed,block_size=4M \
		subformat=dynamic,log_size=4M; do
		case $size:$opts in 1*:*256M* | 1*:*fixed*) continue ;; esac
		rm -f "$T/a.vhdx" "$T/q.vhdx"
		if "$IMGTOOL" create -q -f vhdx -o $opts "$T/a.vhdx" "$size" &&
			"$IO" write "$T/a.vhdx" "$T/p.raw" && qcheck "$T/a.vhdx" &&
			qemu-img compare -q -f vhdx -F raw "$T/a.vhdx" "$T/p.raw" &&
			[ "$(qemu_vsize vhdx "$T/a.vhdx")" = "$(stat -c %s "$T/p.raw")" ]; then
			ok "$opts $size: written by us, qemu-img check clean, compare identical, same size"
		else
			fail "$opts $size: ours -> qemu"
		fi
		if qemu-img convert -f raw -O vhdx -o "$opts" "$T/p.raw" "$T/q.vhdx" &&
			"$IO" cmp "$T/q.vhdx" "$T/p.raw" && "$IMGTOOL" check -q "$T/q.vhdx"; then
			ok "$opts $size: written by qemu-img, read by us byte-identical, check clean"
		else
			fail "$opts $size: qemu -> ours"
		fi
	done
done
rm -f "$T/p.raw" "$T/a.vhdx" "$T/q.vhdx"

# Random writes by qemu-io over our image and by us over qemu's.
"$IMGTOOL" create -q -f vhdx -o block_size=1M "$T/a.vhdx" 48M
qemu-img create -q -f vhdx -o block_size=2M "$T/q.vhdx" 48M
python3 - "$T" <<'PY'
import random, sys
r = random.Random(3)
with open(sys.argv[1] + "/ops", "w") as f:
    for i in range(60):
        off = r.randrange(0, 48 << 11) * 512
        ln = min(r.randrange(1, 2048) * 512, (48 << 20) - off)
        f.write(f"-c\nwrite -P {r.randrange(1, 255)} {off} {ln}\n")
PY
mapfile -t ops <"$T/ops"
qemu-io -f vhdx "${ops[@]}" "$T/a.vhdx" >/dev/null && qemu-io -f vhdx "${ops[@]}" "$T/q.vhdx" >/dev/null
if "$IO" read "$T/a.vhdx" "$T/a.raw" && "$IO" read "$T/q.vhdx" "$T/q.raw" && cmp -s "$T/a.raw" "$T/q.raw" &&
	qemu-img compare -q "$T/a.vhdx" "$T/q.vhdx" && "$IMGTOOL" check -q "$T/a.vhdx"; then
	ok "qemu-io random writes into our image and into qemu's read back alike"
else
	fail "qemu-io random writes"
fi
"$IO" pattern "$T/p.raw" 48M 21
if "$IO" write "$T/q.vhdx" "$T/p.raw" && qcheck "$T/q.vhdx" && "$IO" read "$T/q.vhdx" "$T/q2.raw" &&
	qemu-img convert -O raw "$T/q.vhdx" "$T/q3.raw" && cmp -s "$T/q2.raw" "$T/q3.raw"; then
	ok "our writes into qemu's image: qemu-img check clean, qemu reads what we read"
else
	fail "our writes into a qemu image"
fi
rm -f "$T"/a.* "$T"/q.* "$T"/q2.raw "$T"/q3.raw "$T/p.raw"

# ---- vhdiinfo and vhdimount on what we write -------------------------------
"$IO" pattern "$T/p.raw" 40M 5
for opts in subformat=dynamic subformat=fixed logical_sector_size=4096 \
	logical_sector_size=4096,physical_sector_size=512,block_size=1M; do
	rm -f "$T/v.vhdx"
	"$IMGTOOL" create -q -f vhdx -o $opts "$T/v.vhdx" 40M && "$IO" write "$T/v.vhdx" "$T/p.raw"
	vi=$(vhdiinfo "$T/v.vhdx")
	lss=512
	[[ $opts == *logical_sector_size=4096* ]] && lss=4096
	type=Dynamic
	[[ $opts == *fixed* ]] && type=Fixed
	did=$("$IMGTOOL" info "$T/v.vhdx" | sed -n 's/^ *data_write_guid: //p')
	if grep -q "Disk type.*$type" <<<"$vi" && grep -q "(41943040 bytes)" <<<"$vi" &&
		grep -q "Bytes per sector.*: $lss bytes" <<<"$vi" && grep -q "Identifier.*: $did" <<<"$vi"; then
		ok "vhdiinfo agrees on $opts: $type, 40 MiB, $lss-byte sectors, identifier $did"
	else
		fail "vhdiinfo on $opts: $vi"
	fi
	if [ -e /dev/fuse ] && command -v vhdimount >/dev/null; then
		mkdir -p "$T/mnt"
		if timeout 30 vhdimount "$T/v.vhdx" "$T/mnt" >/dev/null 2>&1; then
			if cmp -s "$T/mnt/vhdi1" "$T/p.raw"; then
				ok "vhdimount (libvhdi) reads $opts as written"
			else
				fail "vhdimount disagrees on $opts"
			fi
			fusermount3 -u "$T/mnt" 2>/dev/null || fusermount -u "$T/mnt"
		else
			skip "vhdimount $opts" "mount failed (no FUSE here)"
		fi
	fi
done
rm -f "$T/v.vhdx"

# ---- differencing chains ---------------------------------------------------
mkdir -p "$T/chain"
(
	cd "$T/chain" || exit 1
	"$IO" pattern p1.raw 64M 11 && "$IO" pattern p2.raw 64M 12 && "$IO" pattern p3.raw 64M 13 &&
		"$IMGTOOL" create -q -f vhdx base.vhdx 64M && "$IO" write base.vhdx p1.raw &&
		"$IMGTOOL" create -q -f vhdx -b base.vhdx -F vhdx mid.vhdx && "$IO" write mid.vhdx p2.raw &&
		"$IMGTOOL" create -q -f vhdx -b mid.vhdx -F vhdx top.vhdx && "$IO" write top.vhdx p3.raw
) || fail "building the chain"
if "$IO" read "$T/chain/top.vhdx" "$T/chain/top.raw" && python3 - "$T/chain" <<'PY'; then
import sys
d = sys.argv[1]
C = 1 << 20
layers = [open(f"{d}/p{i}.raw", "rb").read() for i in (1, 2, 3)]
want = bytearray(len(layers[0]))
for i in range(0, len(want), C):
    for l in layers:
        if any(l[i:i + C]):
            want[i:i + C] = l[i:i + C]
assert bytes(want) == open(f"{d}/top.raw", "rb").read()
PY
	ok "chain of depth 3 reads the newest layer's data everywhere"
else
	fail "chain of depth 3"
fi
for img in mid top; do
	parent=base
	[ $img = top ] && parent=mid
	pdid=$("$IMGTOOL" info "$T/chain/$parent.vhdx" | sed -n 's/^ *data_write_guid: //p')
	vi=$(vhdiinfo "$T/chain/$img.vhdx")
	if grep -q 'Disk type.*Differential' <<<"$vi" && grep -q "(67108864 bytes)" <<<"$vi" &&
		grep -q "Parent identifier.*: $pdid" <<<"$vi" && grep -q "Parent filename.*$parent.vhdx" <<<"$vi"; then
		ok "vhdiinfo agrees on $img.vhdx: differencing, parent $parent's data write GUID $pdid"
	else
		fail "vhdiinfo on $img.vhdx"
	fi
done
if [ -e /dev/fuse ] && command -v vhdimount >/dev/null; then
	mkdir -p "$T/mnt"
	if (cd "$T/chain" && timeout 30 vhdimount top.vhdx "$T/mnt" >/dev/null 2>&1); then
		if cmp -s "$T/mnt/vhdi3" "$T/chain/top.raw"; then
			ok "vhdimount (libvhdi) reads our chain exactly as we do"
		else
			fail "vhdimount disagrees on the chain"
		fi
		fusermount3 -u "$T/mnt" 2>/dev/null || fusermount -u "$T/mnt"
	else
		skip "vhdimount chain" "mount failed"
	fi
fi
check "imgtool compare: chain top equals its raw image" "$IMGTOOL" compare -q "$T/chain/top.vhdx" "$T/chain/top.raw"
check "imgtool convert -O raw of the chain equals what we read" bash -c \
	"'$IMGTOOL' convert -O raw '$T/chain/top.vhdx' '$T/conv.raw' && cmp -s '$T/conv.raw' '$T/chain/top.raw'"
if "$IMGTOOL" map --output=json "$T/chain/top.vhdx" | python3 -c '
import json, sys
m = json.load(sys.stdin)
assert sum(e["length"] for e in m) == 64 << 20
assert {e["depth"] for e in m if e.get("data")} >= {0, 1}, m
'; then
	ok "imgtool map: the chain shows data at depth 0 and from parents"
else
	fail "imgtool map on the chain"
fi
# The absolute locator when the relative one does not lead anywhere.
mkdir -p "$T/elsewhere"
cp "$T/chain/top.vhdx" "$T/elsewhere/"
if "$IO" read "$T/elsewhere/top.vhdx" "$T/elsewhere/top.raw" && cmp -s "$T/elsewhere/top.raw" "$T/chain/top.raw"; then
	ok "child moved away: parent found by the absolute locator"
else
	fail "absolute locator"
fi
# The parent written after the child was made: its data write GUID
# changed, and the child refuses it.
cp "$T/chain/base.vhdx" "$T/base.keep" # not next to the child: found by identity
check "the parent can be written" "$IO" zero "$T/chain/base.vhdx" 0 4096
rejects "parent modified after the child was made" "$T/chain/mid.vhdx" "data write GUID" "$IO" read "$T/chain/mid.vhdx" "$T/out.raw"
mv "$T/base.keep" "$T/chain/base.vhdx"
check "the original parent is accepted again" "$IO" read "$T/chain/mid.vhdx" "$T/out.raw"
# Writes through the child do not change what the parent holds.
base_sum=$(sha "$T/chain/base.vhdx")
"$IO" zero "$T/chain/top.vhdx" $((3 * MiB)) $((5 * MiB)) unmap
"$IO" discard "$T/chain/top.vhdx" $((8 * MiB)) $((8 * MiB))
check "zero and discard in the child leave the parent untouched" test "$(sha "$T/chain/base.vhdx")" = "$base_sum"
if "$IO" read "$T/chain/top.vhdx" "$T/out.raw" && python3 - "$T" <<'PY'; then
import sys
d = sys.argv[1]
a = open(d + "/out.raw", "rb").read()
b = open(d + "/chain/top.raw", "rb").read()
M = 1 << 20
assert a[3 * M:8 * M] == bytes(5 * M), "zeroed range"
assert a[:3 * M] == b[:3 * M] and a[16 * M:] == b[16 * M:], "outside the ranges"
PY
	ok "write_zeroes in a differencing disk reads zeros (not the parent), the rest is unchanged"
else
	fail "write_zeroes/discard in a differencing disk"
fi
check "the child after zero/discard: check clean" "$IMGTOOL" check -q "$T/chain/top.vhdx"

# ---- a partially present block (as Hyper-V writes them) --------------------
# Made from one of ours: block 1 of a differencing disk becomes
# PARTIALLY_PRESENT with a sector bitmap (a new 1 MiB at the end of the
# file) that marks every other 64 KiB run as the child's; the rest must
# come from the parent.  libvhdi reads the same.
mkdir -p "$T/pp"
"$IO" pattern "$T/pp/p1.raw" 16M 71 && python3 -c "
import sys; open('$T/pp/p2.raw','wb').write(bytes([0xc5]) * (16 << 20))"
(cd "$T/pp" && "$IMGTOOL" create -q -f vhdx base.vhdx 16M && "$IO" write base.vhdx p1.raw &&
	"$IMGTOOL" create -q -f vhdx -b base.vhdx -F vhdx child.vhdx && "$IO" write child.vhdx p2.raw)
if python3 - "$T/pp" <<'PY'; then
import struct, sys
d = sys.argv[1]
f = open(d + "/child.vhdx", "r+b")
hdr = f.read(320 << 10)
rt = hdr[192 << 10:]
for i in range(struct.unpack_from("<I", rt, 8)[0]):
    e = rt[16 + 32 * i:48 + 32 * i]
    if e[:4] == bytes.fromhex("6677c22d"):
        bat = struct.unpack_from("<Q", e, 16)[0]
f.seek(0, 2)
end = (f.tell() + (1 << 20) - 1) >> 20 << 20
block, bsize, ratio = 1, 2 << 20, 2048        # 2 MiB blocks, 512-byte sectors
bitmap = bytearray(1 << 20)
spb = bsize // 512
for k in range(spb):
    if (k // 128) % 2 == 0:                      # 64 KiB runs, every other one
        bit = block * spb + k
        bitmap[bit // 8] |= 1 << (bit % 8)
f.seek(end); f.write(bitmap)
f.seek(bat + 8 * block); e = struct.unpack("<Q", f.read(8))[0]
f.seek(bat + 8 * block); f.write(struct.pack("<Q", (e & ~7) | 7))
f.seek(bat + 8 * ratio); f.write(struct.pack("<Q", end | 6))
f.close()
p1 = open(d + "/p1.raw", "rb").read()
want = bytearray(b"\xc5" * (16 << 20))
for k in range(spb):
    if (k // 128) % 2:
        o = bsize * block + k * 512
        want[o:o + 512] = p1[o:o + 512]
open(d + "/want.raw", "wb").write(want)
PY
	if "$IO" cmp "$T/pp/child.vhdx" "$T/pp/want.raw"; then
		ok "partially present block: the sector bitmap picks child or parent per sector"
	else
		fail "partially present block read"
	fi
	if [ -e /dev/fuse ] && command -v vhdimount >/dev/null && mkdir -p "$T/mnt" &&
		(cd "$T/pp" && timeout 30 vhdimount child.vhdx "$T/mnt" >/dev/null 2>&1); then
		if cmp -s "$T/mnt/vhdi2" "$T/pp/want.raw"; then
			ok "vhdimount (libvhdi) reads the partially present block the same"
		else
			fail "vhdimount disagrees on the partially present block"
		fi
		fusermount3 -u "$T/mnt" 2>/dev/null || fusermount -u "$T/mnt"
	fi
	check "map: the partial block shows runs of this layer and of the parent" bash -c \
		"[ \$('$IMGTOOL' map --output=json '$T/pp/child.vhdx' | python3 -c 'import json,sys; print(sum(1 for e in json.load(sys.stdin) if 2<<20 <= e[\"start\"] < 4<<20))') -ge 16 ]"
	# A write into the partial block (512 zero bytes) makes it fully
	# present, keeping both kinds of sectors.
	python3 -c "
w = bytearray(open('$T/pp/want.raw','rb').read()); w[(2<<20)+99840:(2<<20)+100352] = bytes(512)
open('$T/pp/want2.raw','wb').write(w)"
	if "$IO" zero "$T/pp/child.vhdx" $((2 * MiB + 99840)) 512 && "$IO" cmp "$T/pp/child.vhdx" "$T/pp/want2.raw" &&
		"$IMGTOOL" check -q "$T/pp/child.vhdx" &&
		"$IMGTOOL" map --output=json "$T/pp/child.vhdx" | python3 -c '
import json, sys
m = [e for e in json.load(sys.stdin) if e["start"] < 4 << 20 and e["start"] + e["length"] > 2 << 20]
assert all(e["depth"] == 0 for e in m), m'; then
		ok "a write into a partially present block makes it fully present and keeps the parent's sectors"
	else
		fail "write into a partially present block"
	fi
else
	fail "crafting a partially present block"
fi
rm -rf "$T/pp"

# ---- rebase, snapshot, commit ---------------------------------------------
mkdir -p "$T/rb"
(
	cd "$T/rb" || exit 1
	"$IO" pattern p1.raw 32M 61 && "$IO" pattern p2.raw 32M 62 &&
		"$IMGTOOL" create -q -f vhdx b1.vhdx 32M && "$IO" write b1.vhdx p1.raw &&
		"$IMGTOOL" create -q -f vhdx b2.vhdx 32M && "$IO" write b2.vhdx p2.raw &&
		"$IMGTOOL" create -q -f vhdx -b b1.vhdx -F vhdx c.vhdx && "$IO" write c.vhdx p2.raw &&
		"$IO" read c.vhdx before.raw
) || fail "building the rebase images"
b2id=$("$IMGTOOL" info "$T/rb/b2.vhdx" | sed -n 's/^ *data_write_guid: //p')
if (cd "$T/rb" && "$IMGTOOL" rebase -q -b b2.vhdx -F vhdx c.vhdx) && "$IO" cmp "$T/rb/c.vhdx" "$T/rb/before.raw" &&
	vhdiinfo "$T/rb/c.vhdx" | grep -q "Parent identifier.*: $b2id" && "$IMGTOOL" check -q "$T/rb/c.vhdx"; then
	ok "rebase onto another VHDX: same data, new parent locator and linkage (vhdiinfo agrees)"
else
	fail "rebase"
fi
if "$IMGTOOL" rebase -q -b "" "$T/rb/c.vhdx" && "$IO" cmp "$T/rb/c.vhdx" "$T/rb/before.raw" &&
	"$IMGTOOL" info "$T/rb/c.vhdx" | grep -q 'subformat: dynamic' && qcheck "$T/rb/c.vhdx" &&
	qemu-img compare -q "$T/rb/c.vhdx" "$T/rb/before.raw"; then
	ok "rebase to no parent: a dynamic disk qemu-img reads the same"
else
	fail "rebase to standalone"
fi
(
	cd "$T/rb" || exit 1
	"$IMGTOOL" create -q -f vhdx d.vhdx 32M && "$IO" write d.vhdx p1.raw &&
		"$IMGTOOL" snapshot create d.vhdx s1 >/dev/null && "$IO" write d.vhdx p2.raw && "$IO" read d.vhdx d2.raw &&
		"$IMGTOOL" snapshot create d.vhdx s2 >/dev/null && "$IMGTOOL" snapshot delete d.vhdx s1 >/dev/null &&
		"$IO" cmp d.vhdx d2.raw && "$IO" zero d.vhdx 0 1M &&
		"$IMGTOOL" snapshot revert d.vhdx s2 >/dev/null && "$IO" cmp d.vhdx d2.raw &&
		"$IMGTOOL" commit -q d.vhdx && "$IO" cmp d.vhdx d2.raw && "$IMGTOOL" check -q d.vhdx
) >"$T/out" 2>&1
st=$?
check "snapshot create/delete (a middle layer)/revert and commit keep the data and the chain's linkage" test "$st" = 0
rm -rf "$T/rb"

# ---- the log ---------------------------------------------------------------
# A write killed between the log entry and the end of the session leaves a
# pending log; count the host writes of a run first and kill at several
# points of it.
"$IO" pattern "$T/p.raw" 16M 31
"$IMGTOOL" create -q -f vhdx -o block_size=1M "$T/base.vhdx" 16M
pending=0 replayed_by_qemu=0 bad=0
for n in $(seq 1 120); do
	cp "$T/base.vhdx" "$T/l.vhdx"
	"$IO" crash "$T/l.vhdx" "$T/p.raw" $n >/dev/null 2>&1
	[ $? = 99 ] || break # the run completed before the Nth write
	before=$(sha "$T/l.vhdx")
	"$IMGTOOL" check "$T/l.vhdx" >"$T/out" 2>&1
	grep -q "not yet replayed" "$T/out" || continue
	pending=$((pending + 1))
	"$IO" read "$T/l.vhdx" "$T/ours.raw" || bad=$((bad + 1))
	[ "$(sha "$T/l.vhdx")" = "$before" ] || bad=$((bad + 1))
	cp "$T/l.vhdx" "$T/lq.vhdx"
	# qemu replays our log on a read-write open.
	qemu-img check -r all -f vhdx "$T/lq.vhdx" >/dev/null 2>&1
	if qemu-img convert -O raw "$T/lq.vhdx" "$T/theirs.raw" && cmp -s "$T/ours.raw" "$T/theirs.raw"; then
		replayed_by_qemu=$((replayed_by_qemu + 1))
	fi
	"$IMGTOOL" check -q -r all "$T/l.vhdx" >/dev/null
	if ! "$IO" cmp "$T/l.vhdx" "$T/ours.raw" || ! qcheck "$T/l.vhdx" ||
		"$IMGTOOL" check "$T/l.vhdx" 2>&1 | grep -q "not yet replayed"; then
		bad=$((bad + 1))
	fi
done
if [ $pending -ge 3 ] && [ $bad = 0 ] && [ $replayed_by_qemu = $pending ]; then
	ok "pending logs ($pending kill points): read-only replay in memory, no write, check reports it, qemu's replay reads the same, check -r replays"
else
	fail "pending logs: $pending pending, $bad bad, $replayed_by_qemu replayed alike by qemu"
fi
rm -f "$T"/l.vhdx "$T"/lq.vhdx "$T"/*.raw

# ---- imgtool commands ------------------------------------------------------
"$IO" pattern "$T/p.raw" 32M 41
"$IMGTOOL" convert -O vhdx -o block_size=1M "$T/p.raw" "$T/c.vhdx"
check "convert raw -> vhdx -> raw round trip" bash -c \
	"'$IMGTOOL' convert -O raw '$T/c.vhdx' '$T/c.raw' && cmp -s '$T/c.raw' '$T/p.raw'"
check "convert skips zeros: fewer blocks than the disk" bash -c \
	"'$IMGTOOL' info --output=json '$T/c.vhdx' | python3 -c 'import json,sys; i=json.load(sys.stdin); assert i[\"actual-size\"] < 32<<20, i'"
check "info: subformat dynamic, block size 1 MiB" bash -c \
	"'$IMGTOOL' info '$T/c.vhdx' | grep -q 'subformat: dynamic' && '$IMGTOOL' info '$T/c.vhdx' | grep -q 'cluster_size: 1048576'"
check "compare: vhdx against its source" "$IMGTOOL" compare -q "$T/c.vhdx" "$T/p.raw"
"$IMGTOOL" resize "$T/c.vhdx" 100M
if [ "$(vsize "$T/c.vhdx")" = $((100 * MiB)) ] && [ "$(qemu_vsize vhdx "$T/c.vhdx")" = $((100 * MiB)) ] && qcheck "$T/c.vhdx" &&
	"$IO" read "$T/c.vhdx" "$T/c.raw" && cmp -s <(head -c 32M "$T/c.raw") "$T/p.raw" &&
	[ "$(tail -c +$((32 * MiB + 1)) "$T/c.raw" | tr -d '\0' | wc -c)" = 0 ]; then
	ok "resize grow 32M -> 100M: qemu agrees, data kept, new room zero"
else
	fail "resize grow"
fi
# Grow past what the BAT region holds: 1 MiB blocks, 1 MiB BAT = 128 Ki
# entries = 127 GiB of disk; 200 GiB moves the BAT.
"$IMGTOOL" resize "$T/c.vhdx" 200G
if [ "$(qemu_vsize vhdx "$T/c.vhdx")" = $((200 * 1024 * MiB)) ] && qcheck "$T/c.vhdx" &&
	qemu-img dd -f vhdx -O raw if="$T/c.vhdx" of="$T/c.raw" bs=1M count=32 2>/dev/null && cmp -s "$T/c.raw" "$T/p.raw"; then
	ok "resize grow to 200G relocates the BAT: qemu-img check clean, data kept"
else
	fail "resize with BAT relocation"
fi
"$IMGTOOL" resize --shrink "$T/c.vhdx" 20M
if [ "$(qemu_vsize vhdx "$T/c.vhdx")" = $((20 * MiB)) ] && qcheck "$T/c.vhdx" &&
	"$IO" read "$T/c.vhdx" "$T/c.raw" && cmp -s "$T/c.raw" <(head -c 20M "$T/p.raw"); then
	ok "resize shrink to 20M: qemu agrees, first 20 MiB kept"
else
	fail "resize shrink"
fi
"$IMGTOOL" resize "$T/c.vhdx" 32M
if "$IO" read "$T/c.vhdx" "$T/c.raw" && cmp -s <(head -c 20M "$T/c.raw") <(head -c 20M "$T/p.raw") &&
	[ "$(tail -c +$((20 * MiB + 1)) "$T/c.raw" | tr -d '\0' | wc -c)" = 0 ]; then
	ok "shrink then grow: the dropped tail reads as zeros"
else
	fail "shrink then grow"
fi
# Differencing resize.
"$IMGTOOL" create -q -f vhdx -b "$T/chain/base.vhdx" -F vhdx "$T/chain/r.vhdx"
"$IMGTOOL" resize "$T/chain/r.vhdx" 80M && "$IMGTOOL" resize --shrink "$T/chain/r.vhdx" 48M
check "differencing resize grow then shrink: 48 MiB, check clean" bash -c \
	"[ \$('$IMGTOOL' info --output=json '$T/chain/r.vhdx' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"virtual-size\"])') = $((48 * MiB)) ] && '$IMGTOOL' check -q '$T/chain/r.vhdx'"
rm -f "$T"/c.* "$T/p.raw"

# ---- check -r ----------------------------------------------------------------
"$IO" pattern "$T/p.raw" 16M 51
"$IMGTOOL" create -q -f vhdx -o block_size=1M "$T/k.vhdx" 16M && "$IO" write "$T/k.vhdx" "$T/p.raw"
bat=$(python3 - "$T/k.vhdx" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read(320 << 10)
rt = d[192 << 10:]
for i in range(struct.unpack_from("<I", rt, 8)[0]):
    e = rt[16 + 32 * i:48 + 32 * i]
    if e[:4] == bytes.fromhex("6677c22d"):
        print(struct.unpack_from("<Q", e, 16)[0])
PY
)
# Second allocated block made to overlap the first (entry 1 := entry 0).
cp "$T/k.vhdx" "$T/ov.vhdx"
python3 - "$T/ov.vhdx" "$bat" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); bat = int(sys.argv[2])
f.seek(bat); e = f.read(64)
ents = struct.unpack("<8Q", e)
alloc = [i for i, v in enumerate(ents) if v & 7 == 6]
f.seek(bat + 8 * alloc[1]); f.write(struct.pack("<Q", ents[alloc[0]]))
PY
check "check finds overlapping blocks" bash -c "! '$IMGTOOL' check '$T/ov.vhdx' >'$T/out' 2>&1 && grep -q overlaps '$T/out'"
check "check -r all separates them and is clean after" bash -c "'$IMGTOOL' check -q -r all '$T/ov.vhdx'; '$IMGTOOL' check -q '$T/ov.vhdx' && qemu-img check '$T/ov.vhdx' >/dev/null"
# An entry past the end of the file.
cp "$T/k.vhdx" "$T/pe.vhdx"
python3 - "$T/pe.vhdx" "$bat" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); bat = int(sys.argv[2])
f.seek(bat + 8 * 3); f.write(struct.pack("<Q", (4096 << 20) | 6))
PY
rejects "BAT entry past the end refused at open" "$T/pe.vhdx" "past the end" "$IO" read "$T/pe.vhdx" "$T/out.raw"
check "check -r all clears the entry past the end" bash -c "'$IMGTOOL' check -q -r all '$T/pe.vhdx'; '$IMGTOOL' check -q '$T/pe.vhdx' && qemu-img check '$T/pe.vhdx' >/dev/null"
# A leak: a block written but never referenced.
cp "$T/k.vhdx" "$T/lk.vhdx"
truncate -s +3M "$T/lk.vhdx"
check "check reports trailing unreferenced space as a leak; -r leaks trims it" bash -c \
	"'$IMGTOOL' check '$T/lk.vhdx' 2>&1 | grep -qi leak && '$IMGTOOL' check -q -r leaks '$T/lk.vhdx'; '$IMGTOOL' check -q '$T/lk.vhdx' && '$IO' cmp '$T/lk.vhdx' '$T/p.raw'"

# ---- hostile images --------------------------------------------------------
mk() { cp "$T/k.vhdx" "$T/$1.vhdx"; python3 - "$T/$1.vhdx" "$bat"; }
crc32c_py='
def crc32c(b, crc=0):
    crc ^= 0xffffffff
    for x in b:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff
'
mk badhdr <<'PY'
import sys
f = open(sys.argv[1], "r+b")
for o in (64 << 10, 128 << 10):
    f.seek(o + 100); f.write(b"\xff")
PY
rejects "both headers with bad CRC-32C" "$T/badhdr.vhdx" "both VHDX headers" "$IMGTOOL" info "$T/badhdr.vhdx"
mk overlap <<PY
import struct, sys
$crc32c_py
f = open(sys.argv[1], "r+b")
for o in (192 << 10, 256 << 10):
    f.seek(o); t = bytearray(f.read(65536))
    n = struct.unpack_from("<I", t, 8)[0]
    offs = [struct.unpack_from("<Q", t, 16 + 32 * i + 16)[0] for i in range(n)]
    struct.pack_into("<Q", t, 16 + 32 * 1 + 16, offs[0])   # both regions at one place
    struct.pack_into("<I", t, 4, 0); struct.pack_into("<I", t, 4, crc32c(bytes(t)))
    f.seek(o); f.write(t)
PY
rejects "region table with overlapping regions" "$T/overlap.vhdx" "overlaps" "$IMGTOOL" info "$T/overlap.vhdx"
mk logcrc <<PY
import struct, sys, uuid
$crc32c_py
f = open(sys.argv[1], "r+b")
# A log GUID in the current header and an entry of that GUID with a bad CRC.
hs = []
for o in (64 << 10, 128 << 10):
    f.seek(o); hs.append((struct.unpack_from("<Q", f.read(16), 8)[0], o))
seq, o = max(hs)
f.seek(o); h = bytearray(f.read(4096))
g = uuid.uuid4().bytes_le
h[48:64] = g
log_off = struct.unpack_from("<Q", h, 72)[0]
struct.pack_into("<I", h, 4, 0); struct.pack_into("<I", h, 4, crc32c(bytes(h)))
f.seek(o); f.write(h)
e = bytearray(8192)
struct.pack_into("<IIIIQII", e, 0, 0x65676f6c, 0xdeadbeef, 8192, 0, 5, 1, 0)
e[32:48] = g
struct.pack_into("<QQ", e, 48, 1 << 30, 1 << 30)
struct.pack_into("<IIQQQ", e, 64, 0x63736564, 0, 0, 0, 5)   # would write over offset 0
struct.pack_into("<II", e, 4096, 0x61746164, 0); struct.pack_into("<I", e, 8188, 5)
f.seek(log_off); f.write(e)
PY
before=$(sha "$T/logcrc.vhdx")
if "$IO" cmp "$T/logcrc.vhdx" "$T/p.raw" && [ "$(sha "$T/logcrc.vhdx")" = "$before" ]; then
	ok "log entry with a bad CRC is not replayed (read-only open, file untouched, data intact)"
else
	fail "log entry with a bad CRC"
fi
mk logevil <<PY
import struct, sys, uuid
$crc32c_py
f = open(sys.argv[1], "r+b")
hs = []
for o in (64 << 10, 128 << 10):
    f.seek(o); hs.append((struct.unpack_from("<Q", f.read(16), 8)[0], o))
seq, o = max(hs)
f.seek(o); h = bytearray(f.read(4096))
g = uuid.uuid4().bytes_le
h[48:64] = g
log_off = struct.unpack_from("<Q", h, 72)[0]
struct.pack_into("<I", h, 4, 0); struct.pack_into("<I", h, 4, crc32c(bytes(h)))
f.seek(o); f.write(h)
# A valid entry whose one data sector targets the header at 64 KiB.
e = bytearray(8192)
struct.pack_into("<IIIIQII", e, 0, 0x65676f6c, 0, 8192, 0, 5, 1, 0)
e[32:48] = g
struct.pack_into("<QQ", e, 48, 1 << 22, 1 << 22)
struct.pack_into("<IIQQQ", e, 64, 0x63736564, 0, 0, 64 << 10, 5)
struct.pack_into("<II", e, 4096, 0x61746164, 0); struct.pack_into("<I", e, 8188, 5)
struct.pack_into("<I", e, 4, crc32c(bytes(e)))
f.seek(log_off); f.write(e)
PY
rejects "valid log entry that would overwrite a header (read-only)" "$T/logevil.vhdx" "log entry" "$IMGTOOL" info "$T/logevil.vhdx"
rejects "valid log entry that would overwrite a header (read-write)" "$T/logevil.vhdx" "log entry" "$IO" zero "$T/logevil.vhdx" 0 512
mk required <<PY
import struct, sys
$crc32c_py
f = open(sys.argv[1], "r+b")
for o in (192 << 10, 256 << 10):
    f.seek(o); t = bytearray(f.read(65536))
    n = struct.unpack_from("<I", t, 8)[0]
    struct.pack_into("<I", t, 8, n + 1)
    e = 16 + 32 * n
    t[e:e + 16] = bytes(range(16)); struct.pack_into("<QII", t, e + 16, 0, 0, 1)
    struct.pack_into("<I", t, 4, 0); struct.pack_into("<I", t, 4, crc32c(bytes(t)))
    f.seek(o); f.write(t)
PY
rejects "unknown required region" "$T/required.vhdx" "unknown required region" "$IMGTOOL" info "$T/required.vhdx"
mk bigbs <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
f.seek(3 << 20 if False else 0)
d = open(sys.argv[1], "rb").read(4 << 20)
i = d.find(b"metadata", 1 << 20)
# The file parameters item sits at metadata + 64 KiB in our layout.
f.seek(i + 65536); f.write(struct.pack("<I", 3 << 20))
PY
rejects "block size not a power of two" "$T/bigbs.vhdx" "block size" "$IMGTOOL" info "$T/bigbs.vhdx"
truncate -s 900K "$T/k.vhdx.short" 2>/dev/null; head -c 900K "$T/k.vhdx" >"$T/short.vhdx"
rejects "truncated file" "$T/short.vhdx" "too small" "$IMGTOOL" info "$T/short.vhdx"
rm -f "$T"/*.vhdx "$T"/*.raw

finish
