#!/bin/bash
# End-to-end: the VHD driver against real images, qemu-img (-f vpc),
# vhdiinfo and vhdimount (libvhdi), plus bad input, crash repair, resize,
# rebase and zero handling.  Images are driven through imgtool and the
# tests/helpers/vhd_io program (libimg directly).
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
IO=${VHD_IO:-$PWD/$B/tests/helpers/vhd_io}
FIX=$PWD/tests/fixtures/vhd
MiB=1048576


[ -x "$IO" ] || { fail "vhd_io helper not built ($IO)"; finish; exit 1; }

# ---- real images --------------------------------------------------------
zcat "$FIX/dynamic.vhd.gz" >"$T/win-dynamic.vhd"
zcat "$FIX/fixed.vhd.gz" >"$T/win-fixed.vhd"
bzcat "$FIX/d2v-zerofilled.vhd.bz2" >"$T/d2v.vhd"
bzcat "$FIX/hyperv2012r2-dynamic.vhd.bz2" >"$T/hyperv.vhd"
bzcat "$FIX/virtualpc-dynamic.vhd.bz2" >"$T/vpc.vhd"
for f in fat-differential image image-differential; do zcat "$FIX/$f.vhd.gz" >"$T/$f.vhd"; done

while read -r name want; do
	if "$IO" read "$T/$name" "$T/out.raw" && [ "$(sha "$T/out.raw")" = "$want" ]; then
		ok "real $name reads to its expected sha256"
	else
		fail "real $name sha256"
	fi
done <<'EOF'
win-dynamic.vhd ecff2ef6615a3cddc6a6885f1c6d9cf13a232697e1dc6575f2c2f01f57247784
win-fixed.vhd 459325ab1fcd1d5ec9854cba790ee26378317cda177ffc1072008a1df88e6463
d2v.vhd 1ba076be94a8a64541c25aae8d5a5f8b0da758c3797af597e03acb431ff8d143
EOF
check "fixed VHD probed by its trailing footer" \
	bash -c "'$IMGTOOL' info '$T/win-fixed.vhd' | grep -q '^file format: vhd$'"
check "Disk2vhd: bogus CHS ignored, current_size used" test "$(vsize "$T/d2v.vhd")" = 263454720
# The 127 GiB empty images: qemu's sha256 is that of all zeros; no block is
# allocated, so every read is zeros by construction (reading 127 GiB here
# would take minutes).
for f in hyperv vpc; do
	if [ "$(vsize "$T/$f.vhd")" = 136365211648 ] && [ "$("$IO" map "$T/$f.vhd" | grep -c allocated)" = 0 ] &&
		"$IMGTOOL" info "$T/$f.vhd" | grep -q 'chs-size: 136363130880'; then
		ok "real $f.vhd: current_size 136365211648, CHS size reported, nothing allocated"
	else
		fail "real $f.vhd size/map"
	fi
done
rejects "differencing with a missing parent" "$T/fat-differential.vhd" "parent" "$IO" read "$T/fat-differential.vhd" "$T/out.raw"
if "$IO" read "$T/fat-differential.vhd" "$T/out.raw" nobacking &&
	[ "$(sha "$T/out.raw")" = 9e96fac774e2e3606e0e3d5f1152844ca3c6a45ed45e61f36586b2cd60b19d3f ]; then
	ok "real Windows differencing disk read without its parent matches qemu"
else
	fail "fat-differential without parent"
fi
check "locators W2ku/W2ru decoded" bash -c "'$IMGTOOL' info '$T/fat-differential.vhd' | grep -q 'parent-locator-W2ru: fat-parent.vhd'"
rejects "stale footer checksum refused" "$T/image.vhd" "checksum" "$IO" read "$T/image.vhd" "$T/out.raw"
if "$IO" read "$T/image-differential.vhd" "$T/out.raw" force &&
	[ "$(sha "$T/out.raw")" = c6db12a7db548e193c29420c1b4533e4708b20c5033db5cc29ef075d48316d25 ]; then
	ok "forced: differencing disk finds its parent by name (no locators)"
else
	fail "image-differential forced read"
fi

# ---- round trips with qemu-img -------------------------------------------
"$IO" pattern "$T/p64.raw" 64M 1
for size in 64M $((300 * MiB + 3 * 512)) $((2048 * MiB + MiB)); do
	"$IO" pattern "$T/p.raw" "$size" 7
	for sub in dynamic fixed; do
		rm -f "$T/a.vhd" "$T/q.vhd"
		if "$IMGTOOL" create -q -f vhd -o subformat=$sub "$T/a.vhd" "$size" &&
			"$IO" write "$T/a.vhd" "$T/p.raw" &&
			qemu-img compare -q -f vpc -F raw "$T/a.vhd" "$T/p.raw" &&
			[ "$(qemu_vsize vpc "$T/a.vhd")" = "$(stat -c %s "$T/p.raw")" ]; then
			ok "$sub $size: written by us, qemu-img compare identical, same size"
		else
			fail "$sub $size: ours -> qemu"
		fi
		if qemu-img convert -f raw -O vpc -o subformat=$sub,force_size=on "$T/p.raw" "$T/q.vhd" &&
			"$IO" cmp "$T/q.vhd" "$T/p.raw"; then
			ok "$sub $size: written by qemu-img, read by us byte-identical"
		else
			fail "$sub $size: qemu -> ours"
		fi
	done
done
rm -f "$T/p.raw" "$T/q.raw" "$T/a.vhd" "$T/q.vhd" "$T/out.raw"

# qemu without force_size rounds up to the CHS geometry; so do we with
# force_size=off.
for size in 10M 64M 300M 1G; do
	qemu-img create -q -f vpc "$T/q.vhd" $size
	"$IMGTOOL" create -q -f vhd -o force_size=off "$T/a.vhd" $size
	check "force_size=off $size: CHS-rounded size equals qemu's" test "$(vsize "$T/a.vhd")" = "$(qemu_vsize vpc "$T/q.vhd")"
	rm -f "$T/q.vhd" "$T/a.vhd"
done

# Azure: fixed, whole MiB, current_size exact, valid checksum.
"$IMGTOOL" create -q -f vhd -o subformat=fixed "$T/azure.vhd" 1000M
if python3 - "$T/azure.vhd" <<'PY'; then
import struct, sys
f = open(sys.argv[1], "rb")
f.seek(0, 2)
size = f.tell()
f.seek(size - 512)
ft = f.read(512)
assert ft[:8] == b"conectix"
cur = struct.unpack(">Q", ft[48:56])[0]
assert cur == 1000 << 20 and size == cur + 512, (cur, size)
assert struct.unpack(">I", ft[60:64])[0] == 2
stored = struct.unpack(">I", ft[64:68])[0]
calc = ~sum(ft[:64] + ft[68:]) & 0xffffffff
assert stored == calc, (stored, calc)
PY
	ok "fixed 1000M: current_size exactly 1000 MiB, file = size + 512, footer checksum valid"
else
	fail "Azure fixed VHD rule"
fi
check "vhdiinfo reads our fixed image" bash -c "vhdiinfo '$T/azure.vhd' | grep -q 'Disk type.*Fixed'"

# ---- differencing chain of depth 3, vhdiinfo and vhdimount ----------------
mkdir -p "$T/chain"
(
	cd "$T/chain" || exit 1
	"$IO" pattern p1.raw 64M 11 && "$IO" pattern p2.raw 64M 12 && "$IO" pattern p3.raw 64M 13 &&
		"$IMGTOOL" create -q -f vhd base.vhd 64M && "$IO" write base.vhd p1.raw &&
		"$IMGTOOL" create -q -f vhd -b base.vhd mid.vhd && "$IO" write mid.vhd p2.raw &&
		"$IMGTOOL" create -q -f vhd -b mid.vhd top.vhd && "$IO" write top.vhd p3.raw
) || fail "building the chain"
if "$IO" read "$T/chain/top.vhd" "$T/chain/top.raw" && python3 - "$T/chain" <<'PY'; then
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
	uuid=$("$IMGTOOL" info "$T/chain/$img.vhd" | sed -n 's/^parent uuid: //p')
	parent=$("$IMGTOOL" info "$T/chain/$img.vhd" | sed -n 's/^backing file: \([^ ]*\).*/\1/p')
	vi=$(vhdiinfo "$T/chain/$img.vhd")
	if grep -q 'Disk type.*Differential' <<<"$vi" && grep -q "Media size.*(67108864 bytes)" <<<"$vi" &&
		grep -q "Parent identifier.*: $uuid" <<<"$vi" && grep -q "Parent filename.*: $parent" <<<"$vi"; then
		ok "vhdiinfo agrees on $img.vhd: differencing, size, parent $parent $uuid"
	else
		fail "vhdiinfo on $img.vhd"
	fi
done
vi=$(vhdiinfo "$T/chain/base.vhd")
check "vhdiinfo agrees on our dynamic image" bash -c "grep -q 'Disk type.*Dynamic' <<<'$vi' && grep -q '(67108864 bytes)' <<<'$vi'"
if [ -e /dev/fuse ] && command -v vhdimount >/dev/null; then
	mkdir -p "$T/mnt"
	if timeout 30 vhdimount "$T/chain/top.vhd" "$T/mnt" >/dev/null 2>&1; then
		"$IO" read "$T/chain/mid.vhd" "$T/chain/mid.raw"
		if cmp -s "$T/mnt/vhdi3" "$T/chain/top.raw" && cmp -s "$T/mnt/vhdi2" "$T/chain/mid.raw"; then
			ok "vhdimount (libvhdi) reads our chain exactly as we do"
		else
			fail "vhdimount disagrees on the chain"
		fi
		fusermount3 -u "$T/mnt" 2>/dev/null || fusermount -u "$T/mnt"
	else
		skip "vhdimount cross-check" "mount failed"
	fi
fi
# Parent found by name next to the child when the locators are stale.
mkdir -p "$T/moved"
cp "$T/chain/base.vhd" "$T/chain/mid.vhd" "$T/moved/"
if "$IO" rebase "$T/moved/mid.vhd" "$T/moved/base.vhd" && mkdir -p "$T/moved2" &&
	mv "$T/moved/base.vhd" "$T/moved/mid.vhd" "$T/moved2/" &&
	"$IO" read "$T/moved2/mid.vhd" "$T/moved2/mid.raw" && cmp -s "$T/moved2/mid.raw" "$T/chain/mid.raw"; then
	ok "parent found next to the child after both moved (absolute locators stale)"
else
	fail "parent by name next to child"
fi
mkdir -p "$T/uuid"
"$IMGTOOL" create -q -f vhd "$T/uuid/base.vhd" 64M
"$IMGTOOL" create -q -f vhd -b base.vhd "$T/uuid/child.vhd"
rm "$T/uuid/base.vhd"
"$IMGTOOL" create -q -f vhd "$T/uuid/base.vhd" 64M
rejects "parent with the wrong UUID refused" "$T/uuid/child.vhd" "UUID" "$IO" read "$T/uuid/child.vhd" "$T/out.raw"

# ---- rebase (set_backing) ------------------------------------------------
deep=$T/chain/d/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb/ccccccccccccccccccccccccccccccccccccccccccccccccccccc/dddddddddddddddddddddddddddddddddddddddddddddddddddd/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee
mkdir -p "$deep"
cp "$T/chain/base.vhd" "$deep/base.vhd"
cp "$T/chain/mid.vhd" "$T/chain/mid2.vhd"
if (cd "$T/chain" && "$IO" rebase mid2.vhd "${deep#"$T"/chain/}/base.vhd") &&
	"$IO" read "$T/chain/mid2.vhd" "$T/chain/mid2.raw" && cmp -s "$T/chain/mid2.raw" "$T/chain/mid.raw" &&
	"$IO" check "$T/chain/mid2.vhd" | grep -q 'corruptions=0 leaks=0' &&
	[ "$(stat -c %s "$T/chain/mid2.vhd")" -gt "$(stat -c %s "$T/chain/mid.vhd")" ]; then
	ok "rebase to a long path: locators grow at the end of the file, data intact, check clean"
else
	fail "rebase to a long path"
fi
check "vhdiinfo sees the rebased parent, info the full relative locator" bash -c "vhdiinfo '$T/chain/mid2.vhd' | grep -q 'Parent filename.*: base.vhd' && '$IMGTOOL' info '$T/chain/mid2.vhd' | grep -q '^backing file: d/a.*eeee/base.vhd'"
if "$IO" rebase "$T/chain/mid2.vhd" - && "$IMGTOOL" info "$T/chain/mid2.vhd" | grep -q '^subformat: dynamic$'; then
	ok "rebase to no parent makes a dynamic disk"
else
	fail "rebase to none"
fi

# ---- bad input ------------------------------------------------------------
cp "$T/chain/base.vhd" "$T/good.vhd"
cp "$T/good.vhd" "$T/bad.vhd"
printf 'XXXXXXXX' | dd of="$T/bad.vhd" conv=notrunc status=none
printf 'XXXXXXXX' | dd of="$T/bad.vhd" bs=1 seek=$(($(stat -c %s "$T/bad.vhd") - 512)) conv=notrunc status=none
rejects "wrong cookie (opened as vhd)" "$T/bad.vhd" "conectix" "$IMGTOOL" info -f vhd "$T/bad.vhd"
cp "$T/good.vhd" "$T/bad.vhd"
printf '\x42' | dd of="$T/bad.vhd" bs=1 seek=100 conv=notrunc status=none
printf '\x42' | dd of="$T/bad.vhd" bs=1 seek=$(($(stat -c %s "$T/bad.vhd") - 412)) conv=notrunc status=none
rejects "bad footer checksum" "$T/bad.vhd" "checksum" "$IO" write "$T/bad.vhd" "$T/p64.raw"
cp "$T/good.vhd" "$T/bad.vhd"
truncate -s 1800 "$T/bad.vhd"
rejects "truncated inside the BAT" "$T/bad.vhd" "past the end" "$IO" read "$T/bad.vhd" "$T/out.raw"
cp "$T/good.vhd" "$T/bad.vhd"
printf '\x7f\xff\xff\x00' | dd of="$T/bad.vhd" bs=1 seek=1536 conv=notrunc status=none
rejects "BAT entry beyond EOF" "$T/bad.vhd" "BAT entry 0" "$IO" read "$T/bad.vhd" "$T/out.raw"
cp "$T/good.vhd" "$T/bad.vhd"
python3 - "$T/bad.vhd" <<'PY'
import struct, sys
# header max_table_entries = 3 (the disk needs 32), checksum kept valid
f = open(sys.argv[1], "r+b")
f.seek(512)
h = bytearray(f.read(1024))
h[28:32] = struct.pack(">I", 3)
h[36:40] = b"\0\0\0\0"
h[36:40] = struct.pack(">I", ~sum(h) & 0xffffffff)
f.seek(512)
f.write(h)
PY
rejects "BAT too small for the size" "$T/bad.vhd" "blocks" "$IO" read "$T/bad.vhd" "$T/out.raw"
head -c 300 "$T/good.vhd" >"$T/tiny.vhd"
rejects "file smaller than a footer" "$T/tiny.vhd" "too small" "$IMGTOOL" info -f vhd "$T/tiny.vhd"

# ---- crash, check and repair ---------------------------------------------
"$IO" pattern "$T/p64b.raw" 64M 2
crash_ok=0
for n in 2 3 7 17 36; do
	rm -f "$T/k.vhd"
	"$IMGTOOL" create -q -f vhd "$T/k.vhd" 64M
	"$IO" write "$T/k.vhd" "$T/p64.raw" # closed: flushed
	"$IO" crash "$T/k.vhd" "$T/p64b.raw" $n
	rc=$?
	"$IO" check "$T/k.vhd" all >"$T/check1" 2>&1
	if [ $rc = 99 ] && "$IO" check "$T/k.vhd" | grep -q 'corruptions=0 leaks=0' &&
		"$IO" read "$T/k.vhd" "$T/k.raw" && python3 - "$T/k.raw" "$T/p64.raw" "$T/p64b.raw" <<'PY'; then
import sys
got, old, new = (open(p, "rb").read() for p in sys.argv[1:])
# every sector is the flushed data or the data being written
for i in range(0, len(got), 512):
    s = got[i:i + 512]
    assert s == old[i:i + 512] or s == new[i:i + 512], i
PY
		crash_ok=$((crash_ok + 1))
	else
		echo "crash at write $n: rc=$rc $(tr '\n' '|' <"$T/check1")"
	fi
done
check "killed mid-write at 5 points: check repairs, flushed data intact" test $crash_ok = 5
"$IMGTOOL" create -q -f vhd "$T/k.vhd" 64M
# write 1 appends a block (its bitmap and data in one write), write 2
# would be the trailing footer after it: killed there
"$IO" crash "$T/k.vhd" "$T/p64.raw" 2
if "$IO" check "$T/k.vhd" | grep -q 'corruptions=0 leaks=2' && "$IO" check "$T/k.vhd" leaks >/dev/null &&
	"$IO" check "$T/k.vhd" | grep -q 'corruptions=0 leaks=0' && [ "$(stat -c %s "$T/k.vhd")" = 2560 ]; then
	ok "torn trailing footer is a leak: FIX_LEAKS rewrites it from the copy and trims the block"
else
	fail "torn footer repair"
fi
# A damaged BAT entry and a damaged footer copy, repaired.
cp "$T/good.vhd" "$T/r.vhd"
printf '\x00\x00\x00\x01' | dd of="$T/r.vhd" bs=1 seek=$((1536 + 8)) conv=notrunc status=none
printf 'garbage!' | dd of="$T/r.vhd" bs=1 seek=20 conv=notrunc status=none
if "$IO" check "$T/r.vhd" | grep -q 'corruptions=2' && "$IO" check "$T/r.vhd" all >/dev/null &&
	"$IO" check "$T/r.vhd" | grep -q 'corruptions=0 leaks=0' && "$IO" read "$T/r.vhd" "$T/out.raw"; then
	ok "overlapping BAT entry and bad footer copy repaired"
else
	fail "BAT/footer copy repair"
fi

cp "$T/good.vhd" "$T/r2.vhd"
printf '\x00\x00\x00\x04' | dd of="$T/r2.vhd" bs=1 seek=$((1536 + 8)) conv=notrunc status=none
rejects "writable open with two BAT entries sharing a block" "$T/r2.vhd" "share" "$IO" zero "$T/r2.vhd" 0 512

# ---- resize ---------------------------------------------------------------
cp "$T/good.vhd" "$T/g.vhd"
"$IO" read "$T/g.vhd" "$T/g.raw"
if "$IO" resize "$T/g.vhd" 3G && [ "$(vsize "$T/g.vhd")" = $((3 * 1024 * MiB)) ] &&
	"$IO" read "$T/g.vhd" "$T/g3.raw" && cmp -s -n $((64 * MiB)) "$T/g.raw" "$T/g3.raw" &&
	qemu-img compare -q -f vpc -F raw "$T/g.vhd" "$T/g3.raw" &&
	"$IO" check "$T/g.vhd" | grep -q 'corruptions=0 leaks=0'; then
	ok "grow dynamic 64M -> 3G (BAT relocated), data kept, qemu agrees, check clean"
else
	fail "grow dynamic"
fi
rejects "shrink without the flag refused" "$T/g.vhd" "shrink" "$IO" resize "$T/g.vhd" 32M
if "$IO" resize "$T/g.vhd" 33M shrink && "$IO" resize "$T/g.vhd" 64M && "$IO" read "$T/g.vhd" "$T/g4.raw" &&
	cmp -s -n $((33 * MiB)) "$T/g.raw" "$T/g4.raw" &&
	[ -z "$(tail -c $((31 * MiB)) "$T/g4.raw" | tr -d '\0' | head -c 1)" ] &&
	"$IO" check "$T/g.vhd" | grep -q 'corruptions=0 leaks=0'; then
	ok "shrink 3G -> 33M then grow to 64M: kept data intact, new space zero"
else
	fail "shrink dynamic"
fi
"$IMGTOOL" create -q -f vhd -o subformat=fixed "$T/f.vhd" 64M
"$IO" write "$T/f.vhd" "$T/p64.raw"
if "$IO" resize "$T/f.vhd" 100M && [ "$(stat -c %s "$T/f.vhd")" = $((100 * MiB + 512)) ] &&
	"$IO" read "$T/f.vhd" "$T/f.raw" && cmp -s -n $((64 * MiB)) "$T/f.raw" "$T/p64.raw" &&
	qemu-img compare -q -f vpc -F raw "$T/f.vhd" "$T/f.raw" && [ "$(qemu_vsize vpc "$T/f.vhd")" = $((100 * MiB)) ]; then
	ok "grow fixed 64M -> 100M: footer moved, old footer zeroed"
else
	fail "grow fixed"
fi

# ---- through imgtool's commands ---------------------------------------------
if "$IMGTOOL" convert -O vpc -o subformat=fixed "$T/p64.raw" "$T/cv.vhd" 2>/dev/null &&
	qemu-img compare -q -f vpc -F raw "$T/cv.vhd" "$T/p64.raw" &&
	"$IMGTOOL" convert -O vhd "$T/cv.vhd" "$T/cv2.vhd" && "$IO" cmp "$T/cv2.vhd" "$T/p64.raw" &&
	"$IMGTOOL" info "$T/cv2.vhd" | grep -q '^subformat: dynamic$'; then
	ok "imgtool convert raw -> fixed (vpc) -> dynamic: identical, qemu agrees"
else
	fail "imgtool convert to vhd"
fi
"$IMGTOOL" create -q -f vhd "$T/k2.vhd" 64M
"$IO" crash "$T/k2.vhd" "$T/p64.raw" 3
"$IMGTOOL" check "$T/k2.vhd" >"$T/ck" 2>&1
st=$?
if [ $st = 3 ] && "$IMGTOOL" check -r leaks "$T/k2.vhd" >/dev/null 2>&1 && "$IMGTOOL" check "$T/k2.vhd" >/dev/null 2>&1; then
	ok "imgtool check: interrupted append is leaks only (exit 3), -r leaks repairs it"
else
	fail "imgtool check after a crash: exit $st: $(tr '\n' '|' <"$T/ck")"
fi

# ---- zeros and discard ----------------------------------------------------
"$IMGTOOL" create -q -f vhd "$T/z.vhd" 64M
s0=$(stat -c %s "$T/z.vhd")
head -c $((8 * MiB)) /dev/zero >"$T/zeros.raw"
"$IO" write "$T/z.vhd" "$T/zeros.raw"
"$IO" zero "$T/z.vhd" 0 16M
check "zero writes to unallocated blocks allocate nothing" test "$(stat -c %s "$T/z.vhd")" = "$s0"
"$IO" write "$T/z.vhd" "$T/p64.raw"
if "$IO" discard "$T/z.vhd" 4M 8M && "$IO" zero "$T/z.vhd" 16M 4M unmap &&
	"$IO" map "$T/z.vhd" | grep -q '^4194304 .*hole' && "$IO" map "$T/z.vhd" | grep -q '^16777216 .*hole' &&
	"$IO" read "$T/z.vhd" "$T/z.raw" && [ -z "$(dd if="$T/z.raw" bs=1M skip=16 count=4 status=none | tr -d '\0' | head -c 1)" ] &&
	"$IO" check "$T/z.vhd" | grep -q 'corruptions=0 leaks=0'; then
	ok "discard / write_zeroes(unmap) of whole blocks deallocate them, check clean"
else
	fail "discard / unmap"
fi

finish
