#!/bin/bash
# End-to-end: the VDI driver against qemu-img and real VirtualBox images.
# Round trips both ways (dynamic and fixed; 64 MiB, 300 MiB + 3 sectors,
# 2 GiB + 1 MiB) with sparse random data, differencing chains, growth,
# discard/compaction, crash + repair, bad input.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
IO=${B}/tests/helpers/vdi_io
FIX=tests/fixtures/vdi
MiB=1048576

if ! command -v qemu-img >/dev/null || [ ! -x "$IO" ]; then
	skip "vdi" "needs qemu-img and $IO (make e2e builds it)"
	finish
	exit 0
fi

# Use imgtool's commands where this build has them, else the test helper.
have() { "$IMGTOOL" "$1" --help >/dev/null 2>&1; }
to_raw() { # IMG RAW [extra imgtool args]
	if have convert; then
		"$IMGTOOL" convert -q -O raw "$1" "$2"
	else
		"$IO" dump "$1" "$2"
	fi
}
from_raw() { # RAW IMG [fixed]
	if have convert; then
		"$IMGTOOL" convert -q -f raw -O vdi ${3:+-o subformat=fixed} "$1" "$2"
	else
		"$IO" create "$2" "$(stat -c %s "$1")" ${3:+fixed} && "$IO" loadsparse "$2" "$1"
	fi
}
check_img() { # IMG [-r all|leaks]: prints the helper's summary line
	"$IO" check "$1" ${2:-} 2>/dev/null
}

# A sparse raw file: random runs at random offsets, zero runs inside them,
# data in the last 3 sectors.  A few MiB of data whatever the size.
mkpattern() { # FILE SIZE SEED
	python3 - "$@" <<'PY'
import random, sys
name, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
with open(name, "wb") as f:
    f.truncate(size)
    for _ in range(12):
        n = rnd.randrange(1, 384 * 1024)
        off = rnd.randrange(0, size - n) // 512 * 512
        f.seek(off)
        f.write(rnd.randbytes(n))
        z = rnd.randrange(0, n)
        f.seek(off + rnd.randrange(0, n - z + 1))
        f.write(bytes(z))
    f.seek(size - 1536)
    f.write(rnd.randbytes(1536))
PY
}

# ---- real VirtualBox images --------------------------------------------
# expected.tsv's sha256 is that of qemu-img's raw conversion.  Hashing
# 8 GiB is slow on a loaded machine, so big images are compared with
# qemu-img's conversion instead (the same bytes, hence the same sha256).
while read -r file want; do
	if to_raw "$FIX/$file" "$T/fx.raw" &&
		qemu-img convert -O raw "$FIX/$file" "$T/qfx.raw" &&
		qemu-img compare -q -f raw -F raw "$T/fx.raw" "$T/qfx.raw" &&
		{ [ "$(stat -c %s "$T/fx.raw")" -gt $((64 * MiB)) ] || [ "$(sha "$T/fx.raw")" = "$want" ]; }; then
		ok "VirtualBox fixture $file reads as qemu-img reads it (sha256 $want)"
	else
		fail "VirtualBox fixture $file"
	fi
	rm -f "$T/fx.raw" "$T/qfx.raw"
done <<'EOF'
pyvbox-4.0.8-8G.vdi ebfb4ef19ae410f190327b5ebd312711263bc7579970e87d9c1e2d84e06b3c25
pyvbox-2009-4M.vdi bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8
EOF

# Write data into copies of both VirtualBox layouts (map at 512 / 4096).
for file in pyvbox-4.0.8-8G.vdi pyvbox-2009-4M.vdi; do
	cp "$FIX/$file" "$T/vb.vdi"
	size=$(qemu-img info --output=json "$T/vb.vdi" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
	if [ "$size" -gt $((64 * MiB)) ]; then size=$((64 * MiB)); fi
	mkpattern "$T/vb.raw" "$size" 11
	truncate -s "$(qemu-img info --output=json "$T/vb.vdi" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" "$T/vb.raw"
	if "$IO" loadsparse "$T/vb.vdi" "$T/vb.raw" &&
		qemu-img check -q "$T/vb.vdi" &&
		qemu-img compare -q -f vdi -F raw "$T/vb.vdi" "$T/vb.raw"; then
		ok "write into VirtualBox's $file layout: qemu-img check clean, compare identical"
	else
		fail "write into VirtualBox's $file layout"
	fi
	rm -f "$T/vb.vdi" "$T/vb.raw"
done

# ---- create / info -----------------------------------------------------
if "$IMGTOOL" create -q -f vdi "$T/c.vdi" $((300 * MiB + 1536)) &&
	[ "$(qemu-img info --output=json "$T/c.vdi" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["format"], d["virtual-size"])')" = "vdi $((300 * MiB + 1536))" ] &&
	qemu-img check -q "$T/c.vdi"; then
	ok "create dynamic 300 MiB + 3 sectors: qemu-img sees vdi, exact size, clean"
else
	fail "create dynamic 300 MiB + 3 sectors"
fi
if "$IMGTOOL" create -q -f vdi -o static=on "$T/s.vdi" 10M &&
	"$IMGTOOL" info "$T/s.vdi" | grep -q '^subformat: fixed' &&
	[ "$(stat -c %s "$T/s.vdi")" -eq $((12 * MiB)) ] && qemu-img check -q "$T/s.vdi"; then
	ok "create -o static=on gives a fixed image qemu-img accepts"
else
	fail "create -o static=on"
fi
if ! "$IMGTOOL" create -q -f vdi -o subformat=sparse "$T/bad.vdi" 1M 2>"$T/err" &&
	[ ! -e "$T/bad.vdi" ] && grep -q "subformat" "$T/err"; then
	ok "unknown subformat refused, nothing written"
else
	fail "unknown subformat"
fi
rm -f "$T"/*.vdi

# ---- round trips -------------------------------------------------------
for size in $((64 * MiB)) $((300 * MiB + 1536)) $((2048 * MiB + MiB)); do
	mkpattern "$T/src.raw" "$size" "$size"
	for sub in dynamic fixed; do
		qopt=""
		fixed=""
		if [ $sub = fixed ]; then
			qopt="-o static=on"
			fixed=1
		fi
		# qemu-img writes, we read
		if qemu-img convert -O vdi $qopt "$T/src.raw" "$T/q.vdi" &&
			to_raw "$T/q.vdi" "$T/out.raw" &&
			[ "$(stat -c %s "$T/out.raw")" = "$size" ] &&
			qemu-img compare -q -f raw -F raw "$T/out.raw" "$T/src.raw"; then
			ok "qemu-img -> us: $sub $size bytes reads byte-identical"
		else
			fail "qemu-img -> us: $sub $size"
		fi
		rm -f "$T/q.vdi" "$T/out.raw"
		# we write, qemu-img checks and compares
		if from_raw "$T/src.raw" "$T/o.vdi" $fixed &&
			qemu-img check -q "$T/o.vdi" &&
			qemu-img compare -q -f vdi -F raw "$T/o.vdi" "$T/src.raw" &&
			[ "$(qemu-img info --output=json "$T/o.vdi" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = "$size" ]; then
			ok "us -> qemu-img: $sub $size bytes: check clean, compare identical"
		else
			fail "us -> qemu-img: $sub $size"
		fi
		rm -f "$T/o.vdi"
	done
	rm -f "$T/src.raw"
done

# ---- differencing chain of depth 3 -------------------------------------
mkpattern "$T/l0.raw" $((64 * MiB)) 100
mkpattern "$T/l1.raw" $((64 * MiB)) 101
mkpattern "$T/l2.raw" $((64 * MiB)) 102
python3 - "$T" <<'PY'
import sys
t = sys.argv[1]
M = 1 << 20
img = bytearray(open(t + "/l0.raw", "rb").read())
for i in (1, 2):
    d = open("%s/l%d.raw" % (t, i), "rb").read()
    for o in range(0, len(d), M):
        if d[o:o + M].count(0) != M:
            img[o:o + M] = d[o:o + M]
open(t + "/chain.raw", "wb").write(img)
PY
if "$IMGTOOL" create -q -f vdi "$T/base.vdi" 64M && "$IO" loadsparse "$T/base.vdi" "$T/l0.raw" &&
	"$IMGTOOL" create -q -f vdi -b base.vdi -F vdi "$T/mid.vdi" && "$IO" loadsparse "$T/mid.vdi" "$T/l1.raw" &&
	"$IMGTOOL" create -q -f vdi -b mid.vdi -F vdi "$T/top.vdi" && "$IO" loadsparse "$T/top.vdi" "$T/l2.raw"; then
	ok "chain base <- mid <- top created and written"
else
	fail "chain creation"
fi
if to_raw "$T/top.vdi" "$T/top.raw" && cmp -s "$T/top.raw" "$T/chain.raw"; then
	ok "depth-3 chain reads through every layer correctly"
else
	fail "depth-3 chain read"
fi
if "$IMGTOOL" info "$T/top.vdi" | grep -q '^subformat: diff' &&
	[ "$(check_img "$T/top.vdi")" = "corruptions=0 leaks=0 corruptions_fixed=0 leaks_fixed=0 allocated=$(python3 -c "
d=open('$T/l2.raw','rb').read(); print(sum(1 for o in range(0,len(d),1<<20) if d[o:o+(1<<20)].count(0)!=1<<20))") end=$(stat -c %s "$T/top.vdi")" ]; then
	ok "top layer is a diff image holding only its own blocks"
else
	fail "top layer allocation"
fi
if have convert; then
	if "$IMGTOOL" convert -q -O vdi "$T/top.vdi" "$T/flat.vdi" &&
		! "$IMGTOOL" info "$T/flat.vdi" | grep -q '^subformat: diff' &&
		qemu-img compare -q -f vdi -F raw "$T/flat.vdi" "$T/chain.raw"; then
		ok "convert flattens the chain (qemu-img compare identical)"
	else
		fail "convert flattens the chain"
	fi
else
	skip "convert flattens the chain" "imgtool convert not in this build"
fi
mkdir -p "$T/elsewhere"
mv "$T/mid.vdi" "$T/elsewhere/"
if ! to_raw "$T/top.vdi" "$T/x.raw" 2>/dev/null; then
	ok "a missing parent is an error, not zeros"
else
	fail "a missing parent read as something"
fi
rm -rf "$T"/*.raw "$T"/*.vdi "$T/elsewhere"

# ---- growth: the block map must move data out of its way ---------------
mkpattern "$T/g.raw" $((64 * MiB)) 7
qemu-img convert -O vdi "$T/g.raw" "$T/g.vdi"
if have resize; then
	"$IMGTOOL" resize "$T/g.vdi" 1G
else
	"$IO" resize "$T/g.vdi" 1G
fi
truncate -s 1G "$T/g.raw"
if qemu-img check -q "$T/g.vdi" && qemu-img compare -q -f vdi -F raw "$T/g.vdi" "$T/g.raw" &&
	[ "$(check_img "$T/g.vdi" | cut -d' ' -f1-2)" = "corruptions=0 leaks=0" ]; then
	ok "grow a qemu-made 64 MiB image to 1 GiB: map relocated, data intact"
else
	fail "grow with map relocation"
fi
if "$IO" resize "$T/g.vdi" 32M 2>/dev/null; then
	fail "shrink without asking was accepted"
else
	ok "shrink refused unless asked"
fi
if "$IO" resize "$T/g.vdi" 32M shrink && truncate -s 32M "$T/g.raw" &&
	qemu-img check -q "$T/g.vdi" && qemu-img compare -q -f vdi -F raw "$T/g.vdi" "$T/g.raw"; then
	ok "shrink when asked keeps the data below the new end"
else
	fail "shrink"
fi
rm -f "$T"/g.*
# a fixed image grows by allocating the new blocks; qemu-img's layout has
# no room in its map, so this also relocates
mkpattern "$T/f.raw" $((10 * MiB)) 8
qemu-img convert -O vdi -o static=on "$T/f.raw" "$T/f.vdi"
"$IO" resize "$T/f.vdi" 300M
truncate -s 300M "$T/f.raw"
if qemu-img check -q "$T/f.vdi" && qemu-img compare -q -f vdi -F raw "$T/f.vdi" "$T/f.raw" &&
	"$IMGTOOL" info "$T/f.vdi" | grep -q '^subformat: fixed' &&
	[ "$(check_img "$T/f.vdi" | cut -d' ' -f1-2,5)" = "corruptions=0 leaks=0 allocated=300" ]; then
	ok "grow a qemu-made fixed image 10 MiB -> 300 MiB: all blocks allocated, data intact"
else
	fail "grow a fixed image ($(check_img "$T/f.vdi"))"
fi
rm -f "$T"/f.*

# ---- discard and compaction --------------------------------------------
head -c $((8 * MiB)) /dev/urandom >"$T/d.raw"
from_raw "$T/d.raw" "$T/d.vdi"
before=$(stat -c %s "$T/d.vdi")
"$IO" discard "$T/d.vdi" 1M 2M && "$IO" zero "$T/d.vdi" 5M 1M unmap
python3 - "$T/d.raw" <<'PY'
import sys
M = 1 << 20
d = bytearray(open(sys.argv[1], "rb").read())
d[M:3 * M] = bytes(2 * M)
d[5 * M:6 * M] = bytes(M)
open(sys.argv[1], "wb").write(d)
PY
after=$(stat -c %s "$T/d.vdi")
if [ $((before - after)) -eq $((3 * MiB)) ] && qemu-img check -q "$T/d.vdi" &&
	qemu-img compare -q -f vdi -F raw "$T/d.vdi" "$T/d.raw"; then
	ok "discarding 3 whole blocks gives back 3 MiB; contents and metadata right"
else
	fail "discard/compaction ($before -> $after)"
fi
if have compact; then
	# zeros written over allocated blocks keep them allocated until compact
	head -c $((8 * MiB)) /dev/zero >"$T/z.raw"
	"$IO" load "$T/d.vdi" "$T/z.raw"
	if "$IMGTOOL" compact "$T/d.vdi" && qemu-img check -q "$T/d.vdi" &&
		qemu-img compare -q -f vdi -F raw "$T/d.vdi" "$T/z.raw" &&
		[ "$(stat -c %s "$T/d.vdi")" -eq $((2 * MiB)) ]; then
		ok "imgtool compact drops blocks that read as zero"
	else
		fail "imgtool compact ($(stat -c %s "$T/d.vdi") bytes left)"
	fi
else
	skip "imgtool compact" "not in this build"
fi
rm -f "$T"/d.* "$T"/z.raw

# ---- crash in the middle of writing, then check -r ---------------------
head -c $((6 * MiB)) /dev/urandom >"$T/k.raw"
okcrash=1
for n in 1 3 6 9; do
	"$IO" create "$T/k.vdi" 6M
	"$IO" crash "$T/k.vdi" "$T/k.raw" $n
	"$IO" check "$T/k.vdi" all >/dev/null 2>&1
	res=$(check_img "$T/k.vdi")
	case "$res" in
	"corruptions=0 leaks=0 "*) ;;
	*) okcrash=0 ;;
	esac
	qemu-img check -q "$T/k.vdi" || okcrash=0
	rm -f "$T/k.vdi"
done
if [ $okcrash = 1 ]; then
	ok "killed mid-write at 4 points: check -r leaves a clean image"
else
	fail "crash + repair"
fi
# the same through imgtool check: leaks only (exit 3), then repaired
"$IO" create "$T/k.vdi" 6M
"$IO" crash "$T/k.vdi" "$T/k.raw" 5
if have check; then
	"$IMGTOOL" check -q "$T/k.vdi"
	rc1=$?
	"$IMGTOOL" check -q -r leaks "$T/k.vdi"
	rc2=$?
	"$IMGTOOL" check -q "$T/k.vdi"
	rc3=$?
	if [ $rc1 = 3 ] && [ $rc2 = 0 ] && [ $rc3 = 0 ] && qemu-img check -q "$T/k.vdi"; then
		ok "imgtool check after a crash: leaks only (exit 3), -r leaks repairs them"
	else
		fail "imgtool check after a crash (exit $rc1, repair $rc2, recheck $rc3)"
	fi
fi
rm -f "$T/k.vdi"
# flushed data survives a later crash
"$IO" create "$T/k.vdi" 6M && "$IO" load "$T/k.vdi" "$T/k.raw"
head -c $((6 * MiB)) /dev/urandom >"$T/k2.raw"
"$IO" crash "$T/k.vdi" "$T/k2.raw" 4
"$IO" check "$T/k.vdi" all >/dev/null 2>&1
if to_raw "$T/k.vdi" "$T/k.out" && python3 - "$T/k.raw" "$T/k2.raw" "$T/k.out" <<'PY'
import sys
M = 1 << 20
a, b, c = (open(p, "rb").read() for p in sys.argv[1:4])
# every MiB is either the flushed old data or the new data, never garbage
for o in range(0, len(a), M):
    assert c[o:o + M] in (a[o:o + M], b[o:o + M]), o
PY
then
	ok "after a crash every block holds the flushed data or the new data"
else
	fail "crash over flushed data"
fi
rm -f "$T"/k.*

# ---- bad input: one line naming the field, nothing written -------------
badcase() { # NAME OFFSET HEX-BYTES NEEDLE
	"$IMGTOOL" create -q -f vdi "$T/b.vdi" 4M
	printf "$3" | dd of="$T/b.vdi" bs=1 seek="$2" conv=notrunc status=none
	local s1 s2
	s1=$(sha "$T/b.vdi")
	"$IMGTOOL" info "$T/b.vdi" >/dev/null 2>"$T/err"
	local rc=$?
	s2=$(sha "$T/b.vdi")
	if [ $rc -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "$4" "$T/err" && [ "$s1" = "$s2" ]; then
		ok "bad $1: $(cat "$T/err")"
	else
		fail "bad $1 (rc $rc: $(cat "$T/err"))"
	fi
}
badcase "block size" $((0x178)) '\x00\x00\x30\x00' "block size"
badcase "block map offset" $((0x154)) '\x00\x00\x00\x7f\x00\x00\x10\x7f' "past the end of file"
badcase "disk size" $((0x170)) '\x00\x00\x00\x00\x00\x00\x00\x40' "disk size"
badcase "header size" $((0x48)) '\x10\x00\x00\x00' "header size"
badcase "version" $((0x44)) '\x05\x00\x05\x00' "version"
badcase "image type" $((0x4c)) '\x09\x00\x00\x00' "image type"
"$IMGTOOL" create -q -f vdi "$T/b.vdi" 4M
truncate -s 300 "$T/b.vdi"
if ! "$IMGTOOL" info -f vdi "$T/b.vdi" 2>"$T/err" >/dev/null && grep -q "truncated" "$T/err"; then
	ok "truncated header: $(cat "$T/err")"
else
	fail "truncated header ($(cat "$T/err"))"
fi
rm -f "$T"/b.vdi

finish
