#!/bin/bash
# End-to-end: the VMDK driver against qemu-img, vmdkinfo and real VMware
# images.  Round trips for all five subformats at three sizes both ways,
# real fixtures to their known sha256, bad input refused without writes,
# parent chains of depth 3, resize, check/repair, crash leftovers.
# VMDK_E2E_FULL=1 also hashes the 8 and 16 GiB fixtures end to end.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
CP=$PWD/$B/tests/helpers/vmdk_copy
FX=$PWD/tests/fixtures/vmdk
SUBFORMATS="monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized"

if ! command -v qemu-img >/dev/null || [ ! -x "$CP" ]; then
	skip "vmdk e2e" "needs qemu-img and $CP (make $B/tests/helpers/vmdk_copy)"
	finish
	exit $?
fi

# gen FILE SIZE SEED: sparse file with a few MiB of random data at random
# offsets (odd sizes, partial grains) and zero runs, data at both ends.
gen() {
	python3 - "$@" <<'PY'
import os, random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
with open(path, "wb") as f:
    f.truncate(size)
    spots = [(0, 70000), (size - 5120, 5120)]
    budget = min(size // 4, 5 << 20)
    while budget > 0:
        n = r.choice([512, 4096, 65536, 197120, 300032, 1 << 20])
        off = r.randrange(0, size - n) // 512 * 512
        spots.append((off, n))
        budget -= n
    for off, n in spots:
        f.seek(off)
        f.write(r.randbytes(n))
PY
}

same() { qemu-img compare -q "$@" 2>/dev/null; }
qcheck() { qemu-img check -q "$1" >/dev/null 2>&1; }
sub_flags() { [ "$1" = streamOptimized ] && echo -s; }

# ---- round trips ---------------------------------------------------------
for size in $((64 << 20)) $(((300 << 20) + 1536)) $(((2 << 30) + (1 << 20))); do
	raw=$T/p.raw
	rm -f "$raw"
	gen "$raw" "$size" "$size"
	for sf in $SUBFORMATS; do
		rm -f "$T"/o*.vmdk "$T"/q*.vmdk "$T/back.raw"
		# ours -> qemu
		if "$IMGTOOL" create -q -f vmdk -o subformat=$sf "$T/o.vmdk" "$size" &&
			"$CP" $(sub_flags $sf) -f raw "$raw" "$T/o.vmdk" &&
			same -f raw "$raw" "$T/o.vmdk" && qcheck "$T/o.vmdk"; then
			ok "write $sf $size: qemu-img compare identical, check clean"
		else
			fail "write $sf $size: qemu-img compare/check"
		fi
		# qemu -> ours
		if qemu-img convert -f raw -O vmdk -o subformat=$sf "$raw" "$T/q.vmdk" &&
			truncate -s "$size" "$T/back.raw" &&
			"$CP" "$T/q.vmdk" -F raw "$T/back.raw" &&
			same -f raw -F raw "$raw" "$T/back.raw"; then
			ok "read qemu-made $sf $size: byte-identical"
		else
			fail "read qemu-made $sf $size"
		fi
		if [ "$size" = $((64 << 20)) ] && command -v vmdkinfo >/dev/null &&
			{ [ $sf = monolithicSparse ] || [ $sf = streamOptimized ]; }; then
			want="Monolithic sparse"
			[ $sf = streamOptimized ] && want="Stream optimized"
			out=$(vmdkinfo "$T/o.vmdk" 2>&1)
			if grep -q "Disk type:.*$want" <<<"$out" &&
				grep -q "Media size:.*($size bytes)" <<<"$out"; then
				ok "vmdkinfo reads our $sf: type and size agree"
			else
				fail "vmdkinfo on our $sf: $out"
			fi
		fi
	done
done

# imgtool convert (when this build has it) into each subformat.
if "$IMGTOOL" convert --help 2>&1 | grep -q '^Usage'; then
	gen "$T/c.raw" $((64 << 20)) 7
	for sf in $SUBFORMATS; do
		rm -f "$T"/cv*.vmdk
		if "$IMGTOOL" convert -f raw -O vmdk -o subformat=$sf "$T/c.raw" "$T/cv.vmdk" &&
			same -f raw "$T/c.raw" "$T/cv.vmdk" && qcheck "$T/cv.vmdk"; then
			ok "imgtool convert -O vmdk $sf: identical, check clean"
		else
			fail "imgtool convert -O vmdk $sf"
		fi
	done
else
	skip "imgtool convert into vmdk" "convert not in this build"
fi

# Many small concurrent reads (inside grains) through the NBD server.
if command -v nbdcopy >/dev/null && "$IMGTOOL" serve --help 2>&1 | grep -q socket; then
	N=$T/nbd
	mkdir -p "$N"
	gen "$N/p.raw" $((32 << 20)) 21
	for sf in streamOptimized monolithicSparse; do
		rm -f "$N"/s*.vmdk "$N/sock" "$N/pid" "$N/out.raw"
		if "$IMGTOOL" create -q -f vmdk -o subformat=$sf "$N/s.vmdk" 32M &&
			"$CP" $(sub_flags $sf) -f raw "$N/p.raw" "$N/s.vmdk" &&
			"$IMGTOOL" serve --socket "$N/sock" --read-only --threads 4 \
				--pidfile "$N/pid" --daemon "$N/s.vmdk" >/dev/null &&
			nbdcopy --connections=4 --requests=16 --request-size=4096 \
				"nbd+unix:///s.vmdk?socket=$N/sock" "$N/out.raw" &&
			cmp -s "$N/p.raw" "$N/out.raw"; then
			ok "$sf served over NBD, 4 connections of 4 KiB reads: identical"
		else
			fail "$sf over NBD"
		fi
		[ -f "$N/pid" ] && kill "$(cat "$N/pid")" 2>/dev/null
	done
fi

# ---- real images ------------------------------------------------------------
mkdir -p "$T/fx"
tar -C "$T/fx" -xJf "$FX/jnode.tar.xz"
bzip2 -dc "$FX/iotest-version3.vmdk.bz2" >"$T/fx/iotest-version3.vmdk"
cp "$FX/afl9.vmdk" "$T/fx/"
gzip -dc "$FX/sesparse.vmdk.gz" >"$T/fx/sesparse.vmdk"
while read -r name sha; do
	got=$("$CP" -c "$T/fx/$name" 2>&1)
	check "fixture $name reads to its expected sha256" test "$got" = "$sha"
done <<'EOF'
JNode.vmdk 0e52c012dcf7d869e56730828c45b9a205e43b1ac85e4d6e5c37bff3a2634236
JNode-0.vmdk 51ab64cd89e704296d1d7d3c0fc69cdba163ec1fde7dfc636afb7dd1660e4769
EOF
# The big ones: our reading against qemu's (whose sha is the expected one).
for name in JNode-1.vmdk iotest-version3.vmdk; do
	size=$(qemu-img info --output=json "$T/fx/$name" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
	rm -f "$T/back.raw"
	truncate -s "$size" "$T/back.raw"
	if "$CP" "$T/fx/$name" -F raw "$T/back.raw" &&
		same "$T/fx/$name" -F raw "$T/back.raw"; then
		ok "fixture $name reads as qemu-img reads it"
	else
		fail "fixture $name read"
	fi
	rm -f "$T/back.raw"
done
if [ -n "${VMDK_E2E_FULL:-}" ]; then
	check "JNode-1.vmdk full sha256" test "$("$CP" -c "$T/fx/JNode-1.vmdk")" = \
		a2eda62319a7dc60be3512900e103d5e794052eb6aa8819e6cc559d6ac7e61a6
	check "iotest-version3.vmdk full sha256" test "$("$CP" -c "$T/fx/iotest-version3.vmdk")" = \
		0859bb3397bc1d30fa979c80a289ce98bfd6c1141a64594d6f3cc8cd68218faf
fi
out=$("$IMGTOOL" info "$T/fx/JNode-1.vmdk" 2>&1)
check "info on twoGbMaxExtentSparse fixture: subformat and 5 extents" \
	grep -q "subformat: twoGbMaxExtentSparse" <<<"$out"
out=$("$IMGTOOL" info "$T/fx/iotest-version3.vmdk" 2>&1)
check "info on stream fixture: streamOptimized, 16 GiB" \
	grep -q "virtual size: 16 GiB (17179869184 bytes)" <<<"$out"

# refuse RUN...: exits non-zero with one line on stderr and no file changed.
refuse() {
	local name=$1 pattern=$2 file=$3
	shift 3
	local before after err
	before=$(sha256sum "$file")
	err=$("$@" 2>&1 >/dev/null)
	local rc=$?
	after=$(sha256sum "$file")
	if [ $rc -ne 0 ] && [ "$(wc -l <<<"$err")" -eq 1 ] &&
		grep -qi -- "$pattern" <<<"$err" && [ "$before" = "$after" ]; then
		ok "$name: refused ($err)"
	else
		fail "$name: rc=$rc err=$err"
	fi
}
refuse "afl9.vmdk (fuzzed header)" "afl9.vmdk" "$T/fx/afl9.vmdk" "$IMGTOOL" info "$T/fx/afl9.vmdk"
refuse "afl9.vmdk opened for writing" "afl9.vmdk" "$T/fx/afl9.vmdk" "$CP" -w 0 "$FX/PROVENANCE.md" "$T/fx/afl9.vmdk"
refuse "bare seSparse extent" "seSparse" "$T/fx/sesparse.vmdk" "$IMGTOOL" info "$T/fx/sesparse.vmdk"

# ---- bad input -----------------------------------------------------------------
B64=$T/bad
mkdir -p "$B64"
gen "$B64/p.raw" $((8 << 20)) 3
"$IMGTOOL" create -q -f vmdk "$B64/good.vmdk" 8M && "$CP" -f raw "$B64/p.raw" "$B64/good.vmdk"
cp "$B64/good.vmdk" "$B64/trunc.vmdk" && truncate -s 30000 "$B64/trunc.vmdk"
refuse "truncated monolithicSparse" "trunc.vmdk" "$B64/trunc.vmdk" "$IMGTOOL" info "$B64/trunc.vmdk"
cp "$B64/good.vmdk" "$B64/grain0.vmdk"
printf '\0\0\0\0\0\0\0\0' | dd of="$B64/grain0.vmdk" bs=1 seek=20 conv=notrunc status=none
refuse "grain size zero" "grainSize" "$B64/grain0.vmdk" "$IMGTOOL" info "$B64/grain0.vmdk"
cp "$B64/good.vmdk" "$B64/grainbig.vmdk"
printf '\0\0\0\1' | dd of="$B64/grainbig.vmdk" bs=1 seek=20 conv=notrunc status=none
refuse "absurd grain size" "grainSize" "$B64/grainbig.vmdk" "$IMGTOOL" info "$B64/grainbig.vmdk"
cp "$B64/good.vmdk" "$B64/magic.vmdk"
printf 'KDMX' | dd of="$B64/magic.vmdk" bs=1 conv=notrunc status=none
out=$("$IMGTOOL" info -f vmdk "$B64/magic.vmdk" 2>&1)
check "bad magic with -f vmdk refused" test $? -ne 0
printf '# Disk DescriptorFile\nversion=1\nCID=zz\ncreateType="monolithicFlat"\nRW 100 FLAT "x-flat.vmdk" 0\n' >"$B64/desc.vmdk"
refuse "descriptor that does not parse" "CID" "$B64/desc.vmdk" "$IMGTOOL" info "$B64/desc.vmdk"
"$IMGTOOL" create -q -f vmdk -o subformat=twoGbMaxExtentSparse "$B64/split.vmdk" 3G
rm -f "$B64/split-s002.vmdk"
refuse "missing extent file" "split-s002.vmdk" "$B64/split.vmdk" "$IMGTOOL" info "$B64/split.vmdk"
"$IMGTOOL" create -q -f vmdk -o subformat=monolithicFlat "$B64/flat.vmdk" 8M
truncate -s 4M "$B64/flat-flat.vmdk"
refuse "flat extent too short" "flat-flat.vmdk" "$B64/flat.vmdk" "$IMGTOOL" info "$B64/flat.vmdk"
"$IMGTOOL" create -q -f vmdk -o subformat=streamOptimized "$B64/s.vmdk" 8M &&
	"$CP" -s -f raw "$B64/p.raw" "$B64/s.vmdk"
# Garble the deflate data of the first grain (after its 12-byte marker).
printf 'garbagegarbage' | dd of="$B64/s.vmdk" bs=1 seek=$((65536 + 14)) conv=notrunc status=none
refuse "compressed grain that does not inflate" "inflate" "$B64/s.vmdk" "$CP" -c "$B64/s.vmdk"
"$IMGTOOL" create -q -f vmdk -o subformat=streamOptimized "$B64/s2.vmdk" 8M &&
	"$CP" -s -f raw "$B64/p.raw" "$B64/s2.vmdk"
refuse "random write to streamOptimized" "sequential" "$B64/s2.vmdk" "$CP" -w 4096 "$FX/PROVENANCE.md" "$B64/s2.vmdk"
refuse "resize of streamOptimized" "convert" "$B64/s2.vmdk" "$CP" -r $((16 << 20)) "$B64/s2.vmdk"

# ---- writes: zeros allocate nothing, partial grains, parents ------------------
W=$T/w
mkdir -p "$W"
"$IMGTOOL" create -q -f vmdk "$W/z.vmdk" 64M
head -c 1048576 /dev/zero >"$W/zeros"
before=$(stat -c %s "$W/z.vmdk")
"$CP" -w 1048576 "$W/zeros" "$W/z.vmdk"
check "zero writes to unallocated grains allocate nothing" test "$(stat -c %s "$W/z.vmdk")" = "$before"

# Chain of depth 3: flat base <- sparse <- split sparse <- sparse.
gen "$W/exp.raw" $((64 << 20)) 11
"$IMGTOOL" create -q -f vmdk -o subformat=monolithicFlat "$W/base.vmdk" 64M &&
	"$CP" -f raw "$W/exp.raw" "$W/base.vmdk"
apply() { # apply IMG OFFSET FILE: same write to the image and the reference
	"$CP" -w "$2" "$3" "$1" &&
		dd if="$3" of="$W/exp.raw" bs=512 seek=$(($2 / 512)) conv=notrunc status=none
}
head -c 300000 /dev/urandom >"$W/d1"
head -c 70144 /dev/urandom >"$W/d2"
head -c 2097152 /dev/urandom >"$W/d3"
ok_chain=1
"$IMGTOOL" create -q -f vmdk -b base.vmdk "$W/c1.vmdk" || ok_chain=0
apply "$W/c1.vmdk" 1049088 "$W/d1" || ok_chain=0
"$IMGTOOL" create -q -f vmdk -o subformat=twoGbMaxExtentSparse -b c1.vmdk "$W/c2.vmdk" || ok_chain=0
apply "$W/c2.vmdk" 1115136 "$W/d2" || ok_chain=0
apply "$W/c2.vmdk" 33553920 "$W/d3" || ok_chain=0
"$IMGTOOL" create -q -f vmdk -b c2.vmdk "$W/c3.vmdk" || ok_chain=0
apply "$W/c3.vmdk" 512 "$W/d2" || ok_chain=0
"$CP" -z 39999488 1500160 "$W/c3.vmdk" &&
	dd if=/dev/zero of="$W/exp.raw" bs=512 seek=$((39999488 / 512)) count=$((1500160 / 512)) conv=notrunc status=none || ok_chain=0
check "chain of depth 3 written (COW of partial grains from parents)" test $ok_chain = 1
check "chain of depth 3 reads correctly (sha256)" test "$("$CP" -c "$W/c3.vmdk")" = "$(sha256sum <"$W/exp.raw" | cut -d' ' -f1)"
check "qemu-img follows our chain and agrees" same -F raw "$W/c3.vmdk" "$W/exp.raw"
check "qemu-img check clean on each child" eval 'qcheck "$W/c1.vmdk" && qcheck "$W/c2.vmdk" && qcheck "$W/c3.vmdk"'
"$IMGTOOL" create -q -f vmdk "$W/flat.vmdk" 64M
check "flattening the chain (copy into a standalone image)" eval '"$CP" "$W/c3.vmdk" "$W/flat.vmdk" && same -f raw "$W/exp.raw" "$W/flat.vmdk"'
if "$IMGTOOL" convert --help 2>&1 | grep -q '^Usage'; then
	check "imgtool convert flattens the chain" eval '"$IMGTOOL" convert -O vmdk "$W/c3.vmdk" "$W/flat2.vmdk" && same -f raw "$W/exp.raw" "$W/flat2.vmdk" && ! grep -aq parentFileNameHint "$W/flat2.vmdk"'
fi
cp "$W/c1.vmdk" "$W/c1.saved"
"$CP" -w 0 "$W/d2" "$W/c1.vmdk"
refuse "child whose parent changed (CID mismatch)" "CID" "$W/c3.vmdk" "$CP" -c "$W/c3.vmdk"
cp "$W/c1.saved" "$W/c1.vmdk"

# ---- resize ------------------------------------------------------------------
R=$T/r
mkdir -p "$R"
gen "$R/p.raw" $((64 << 20)) 5
for sf in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
	rm -f "$R"/r*.vmdk
	new=$(((2 << 30) + (1 << 20)))
	cp --sparse=always "$R/p.raw" "$R/big.raw" && truncate -s $new "$R/big.raw"
	if "$IMGTOOL" create -q -f vmdk -o subformat=$sf "$R/r.vmdk" 64M &&
		"$CP" -f raw "$R/p.raw" "$R/r.vmdk" && "$CP" -r $new "$R/r.vmdk" &&
		same -f raw "$R/big.raw" "$R/r.vmdk" && qcheck "$R/r.vmdk" &&
		[ "$("$CP" -k 0 "$R/r.vmdk" | tail -1 | cut -d' ' -f1-2)" = "corruptions=0 leaks=0" ]; then
		ok "resize $sf 64M -> 2G+1M: data kept, qemu-img check clean, our check clean"
	else
		fail "resize $sf"
	fi
done

# ---- check and repair -----------------------------------------------------------
K=$T/k
mkdir -p "$K"
gen "$K/p.raw" $((16 << 20)) 9
"$IMGTOOL" create -q -f vmdk "$K/k.vmdk" 16M && "$CP" -f raw "$K/p.raw" "$K/k.vmdk"
# header: gdOffset at byte 56, rgdOffset at 48 (sectors, little-endian)
gd=$(od -An -tu8 -j56 -N8 "$K/k.vmdk" | tr -d ' ')
gt=$(od -An -tu4 -j$((gd * 512)) -N4 "$K/k.vmdk" | tr -d ' ')
cp "$K/k.vmdk" "$K/bad.vmdk"
# first grain-table entry -> far past the end of the file
printf '\xff\xff\xff\x00' | dd of="$K/bad.vmdk" bs=1 seek=$((gt * 512)) conv=notrunc status=none
out=$("$CP" -k 0 "$K/bad.vmdk")
check "check finds a grain entry past the end of file" grep -q "corruptions=[1-9]" <<<"$out"
out=$("$CP" -k 3 "$K/bad.vmdk")
check "check -r all repairs it" grep -q "fixed=[1-9]" <<<"$out"
check "after repair: our check and qemu-img check clean" eval '"$CP" -k 0 "$K/bad.vmdk" | grep -q "corruptions=0 leaks=0" && qcheck "$K/bad.vmdk"'
cp "$K/k.vmdk" "$K/rgd.vmdk"
rgd=$(od -An -tu8 -j48 -N8 "$K/k.vmdk" | tr -d ' ')
rgt=$(od -An -tu4 -j$((rgd * 512)) -N4 "$K/k.vmdk" | tr -d ' ')
printf '\x07\x00\x00\x00' | dd of="$K/rgd.vmdk" bs=1 seek=$((rgt * 512 + 8)) conv=notrunc status=none
out=$("$CP" -k 0 "$K/rgd.vmdk")
check "check finds a redundant grain table that differs" grep -q "redundant grain table" <<<"$out"
check "repair rewrites the redundant copy" eval '"$CP" -k 3 "$K/rgd.vmdk" >/dev/null && "$CP" -k 0 "$K/rgd.vmdk" | grep -q "corruptions=0"'
cp "$K/k.vmdk" "$K/dup.vmdk"
# second entry -> the first entry's grain (two entries share a grain)
first=$(od -An -tu4 -j$((gt * 512)) -N4 "$K/k.vmdk" | tr -d ' ')
python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('<I', $first))" |
	dd of="$K/dup.vmdk" bs=1 seek=$((gt * 512 + 4)) conv=notrunc status=none
out=$("$CP" -k 0 "$K/dup.vmdk")
check "check finds two grain entries sharing a grain" grep -q "used twice" <<<"$out"
check "repair gives each its own copy" eval '"$CP" -k 3 "$K/dup.vmdk" >/dev/null && "$CP" -k 0 "$K/dup.vmdk" | grep -q "corruptions=0" && qcheck "$K/dup.vmdk"'
# crash mid-write: leaked grains and the unclean flag, repaired
cp "$K/k.vmdk" "$K/crash.vmdk"
head -c 3000000 /dev/urandom >"$K/d"
"$CP" -x 4194304 "$K/d" "$K/crash.vmdk"
out=$("$CP" -k 0 "$K/crash.vmdk")
check "after a crash: check reports leaks and the unclean flag" eval 'grep -q "leaks=[1-9]" <<<"$out" && grep -q unclean <<<"$out"'
# Unflushed writes may or may not have landed; everything else must be intact.
outside_same() {
	rm -f "$K/c.raw" && truncate -s $((16 << 20)) "$K/c.raw" &&
		"$CP" "$K/crash.vmdk" -F raw "$K/c.raw" &&
		python3 - "$K/p.raw" "$K/c.raw" <<'PY'
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
lo, hi = 4194304, 4194304 + 3000000
sys.exit(0 if a[:lo] == b[:lo] and a[hi:] == b[hi:] else 1)
PY
}
check "after a crash: repair leaves a clean image, data outside the write intact" eval '"$CP" -k 3 "$K/crash.vmdk" >/dev/null && "$CP" -k 0 "$K/crash.vmdk" | grep -q "corruptions=0 leaks=0" && qcheck "$K/crash.vmdk" && outside_same'
flat_ok=0
"$IMGTOOL" create -q -f vmdk -o subformat=monolithicFlat "$K/f.vmdk" 8M && truncate -s 1M "$K/f-flat.vmdk" &&
	"$CP" -k 0 "$K/f.vmdk" | grep -q "corruptions=1" && "$CP" -k 3 "$K/f.vmdk" >/dev/null &&
	[ "$(stat -c %s "$K/f-flat.vmdk")" = $((8 << 20)) ] && flat_ok=1
check "check finds and repairs a flat extent shorter than the descriptor" test $flat_ok = 1

finish
