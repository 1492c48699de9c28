#!/bin/bash
# End-to-end: imgtool convert, checksum, compare, map, check, info, resize,
# measure, compact on every format, with qemu-img as the oracle where it has
# the operation and sha256sum of the raw contents elsewhere.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP

have_format() { "$IMGTOOL" --help 2>&1 | grep -Eq "^Formats:.* $1( |\$)"; }
qemu_format() { if [ "$1" = vhd ]; then echo vpc; else echo "$1"; fi; }
our_sum() { "$IMGTOOL" checksum "$1" | cut -d' ' -f1; }
json_get() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

# A 64 MiB source: data (some unaligned to clusters), a region of written
# zeros, zeros written as data, holes, and data in the last 4 KiB.
SRC=$T/src.raw
qemu-img create -q -f raw "$SRC" 64M
qemu-io -f raw -c 'write -P 0x11 0 64K' -c 'write -P 0x22 1M 1536K' \
	-c 'write -z 4M 1M' -c 'write -P 0 8M 2M' -c 'write -P 0x33 20M 4K' \
	-c 'write -P 0x44 34603008 307200' -c 'write -P 0x55 67104768 4K' \
	"$SRC" >/dev/null
SRC_SHA=$(sha "$SRC")

# checksum == sha256sum of the raw contents
check "checksum raw == sha256sum" test "$(our_sum "$SRC")" = "$SRC_SHA"
for alg in sha512 md5; do
	want=$(${alg}sum "$SRC" | cut -d' ' -f1)
	got=$("$IMGTOOL" checksum -a $alg "$SRC" | cut -d' ' -f1)
	check "checksum -a $alg == ${alg}sum" test "$got" = "$want"
done

for f in raw vdi vhd vmdk; do
	if ! have_format $f; then
		skip "$f" "driver not in this build"
		continue
	fi
	q=$(qemu_format $f)
	D=$T/$f
	mkdir -p "$D"
	X=$D/x.$f
	Q=$D/q.$f

	# convert raw -> f; qemu-img reads the same disk
	if "$IMGTOOL" convert -O $f "$SRC" "$X" &&
		qemu-img compare -q -f raw -F $q "$SRC" "$X"; then
		ok "$f: convert from raw, qemu-img compare agrees"
	else
		fail "$f: convert from raw, qemu-img compare agrees"
	fi
	check "$f: checksum of our image == sha256sum of raw" \
		test "$(our_sum "$X")" = "$SRC_SHA"

	# qemu-img's image -> our convert -> raw
	qemu-img convert -f raw -O $q "$SRC" "$Q"
	# qemu-img rounds VHD sizes up to a CHS geometry: the reference for
	# its image is the source padded with zeros to that size.
	REFQ=$D/refq.raw
	cp --sparse=always "$SRC" "$REFQ"
	truncate -s "$(qemu_vsize "$Q")" "$REFQ"
	rm -f "$D/back.raw"
	if "$IMGTOOL" convert -O raw "$Q" "$D/back.raw" &&
		cmp -s "$REFQ" "$D/back.raw"; then
		ok "$f: convert qemu-img's image to raw, identical bytes"
	else
		fail "$f: convert qemu-img's image to raw, identical bytes"
	fi
	check "$f: checksum of qemu-img's image == sha256sum of raw" \
		test "$(our_sum "$Q")" = "$(sha "$REFQ")"
	if [ $f != raw ]; then
		check "$f: convert output stays sparse" \
			test "$(stat -c %b "$D/back.raw")" -lt $((8 * 2048))
	fi

	# compare: ours and qemu-img's agree, first differing offset exact
	out=$("$IMGTOOL" compare "$X" "$Q")
	check "$f: compare ours vs qemu-img's image: identical (exit 0)" \
		test $? = 0 -a "$out" = "Images are identical."
	cp "$Q" "$D/d.$f"
	qemu-io -f $q -c 'write -P 0x77 20971620 1' "$D/d.$f" >/dev/null
	out=$("$IMGTOOL" compare "$X" "$D/d.$f")
	rc=$?
	qemu-img compare -q -f $q -F $q "$X" "$D/d.$f" 2>/dev/null
	qrc=$?
	check "$f: compare finds the changed byte at 20971620 (exit $rc, qemu-img $qrc)" \
		test $rc = 1 -a $qrc = 1 -a "$out" = "Content mismatch at offset 20971620!"
	out=$("$IMGTOOL" compare -f $f -F raw "$X" "$SRC")
	check "$f: compare across formats (vs raw): identical" test $? = 0

	# info: virtual size agrees with qemu-img
	"$IMGTOOL" info --output=json "$X" >"$D/info.json"
	check "$f: info virtual-size == qemu-img's" \
		test "$(json_get "$D/info.json" virtual-size)" = "$(qemu_vsize "$X")"

	# map covers the whole disk; on qemu-made vmdk/vhd it matches qemu-img map
	"$IMGTOOL" map --output=json "$X" >"$D/map.json"
	if python3 - "$D/map.json" 67108864 <<'PY'; then
import json, sys
m = json.load(open(sys.argv[1]))
pos = 0
for e in m:
    assert e["start"] == pos, e
    pos += e["length"]
assert pos == int(sys.argv[2]), pos
PY
		ok "$f: map --output=json covers the whole disk"
	else
		fail "$f: map --output=json covers the whole disk"
	fi
	if [ $f != raw ]; then
		"$IMGTOOL" map --output=json "$Q" >"$D/map1.json"
		qemu-img map --output=json -f $q "$Q" >"$D/map2.json"
		# qemu-img reports unallocated VHD blocks as present zeros (it
		# has no VHD parents); there only the data extents must agree.
		if python3 - "$D/map1.json" "$D/map2.json" $f <<'PY'; then
import json, sys
a = json.load(open(sys.argv[1]))
b = json.load(open(sys.argv[2]))
if sys.argv[3] != "vmdk":
    a = [e for e in a if e["data"]]
    b = [e for e in b if e["data"]]
assert a == b, (a[:4], b[:4])
PY
			ok "$f: map --output=json == qemu-img map on qemu-img's image"
		else
			fail "$f: map --output=json == qemu-img map on qemu-img's image"
		fi
	fi

	# check: clean; raw has no checks (63); qemu-img agrees on vdi/vmdk
	"$IMGTOOL" check -q "$X"
	rc=$?
	if [ $f = raw ]; then
		check "raw: check exits 63 (no checks)" test $rc = 63
	else
		check "$f: check on our image is clean" test $rc = 0
		"$IMGTOOL" check -q "$Q"
		check "$f: check on qemu-img's image is clean" test $? = 0
		"$IMGTOOL" check --output=json "$X" >"$D/check.json"
		check "$f: check --output=json is valid JSON" \
			test "$(json_get "$D/check.json" corruptions)" = 0
	fi
	if [ $f = vdi ] || [ $f = vmdk ]; then
		qemu-img check -q -f $q "$X"
		check "$f: qemu-img check on our image is clean" test $? = 0
	fi

	# resize: grow, contents kept, the tail reads zero
	cp --sparse=always "$X" "$D/r.$f"
	if "$IMGTOOL" resize -q "$D/r.$f" +8M &&
		[ "$(qemu_vsize "$D/r.$f")" -ge $((72 << 20)) ]; then
		ok "$f: resize +8M, qemu-img sees the new size"
	else
		fail "$f: resize +8M, qemu-img sees the new size"
	fi
	rm -f "$D/r-flat.raw"
	"$IMGTOOL" convert -O raw "$D/r.$f" "$D/r-flat.raw"
	if [ "$(head -c 64M "$D/r-flat.raw" | sha256sum | cut -d' ' -f1)" = "$SRC_SHA" ] &&
		[ "$(tail -c +67108865 "$D/r-flat.raw" | tr -d '\0' | wc -c)" = 0 ]; then
		ok "$f: resize keeps the contents, new space reads zero"
	else
		fail "$f: resize keeps the contents, new space reads zero"
	fi
	"$IMGTOOL" resize -q "$D/r.$f" 60M 2>/dev/null
	check "$f: shrinking without --shrink is refused" test $? = 1

	# measure: the required size covers what convert wrote
	"$IMGTOOL" measure -O $f --output=json "$SRC" >"$D/measure.json"
	req=$(json_get "$D/measure.json" required)
	full=$(json_get "$D/measure.json" fully-allocated)
	have=$(stat -c %s "$X")
	# measure counts allocated source data without reading it: the
	# 3 MiB of zeros written as data in the source may cost 2 blocks.
	if [ "$req" -ge "$have" ] && [ "$full" -ge "$req" ] &&
		[ "$req" -le $((have + (4 << 20) + have / 16)) ]; then
		ok "$f: measure required $req >= file $have, fully-allocated $full"
	else
		fail "$f: measure required $req vs file $have, fully-allocated $full"
	fi

	# compact: zeros written over data are dropped, contents unchanged
	cp --sparse=always "$Q" "$D/c.$f"
	qemu-io -f $q -c 'write -P 0 1M 1536K' -c 'write -P 0 33M 1M' "$D/c.$f" >/dev/null
	want=$(our_sum "$D/c.$f")
	before=$(stat -c %b "$D/c.$f")
	size_before=$(stat -c %s "$D/c.$f")
	if "$IMGTOOL" compact -q "$D/c.$f" && [ "$(our_sum "$D/c.$f")" = "$want" ] &&
		[ "$(stat -c %b "$D/c.$f")" -lt "$before" ]; then
		ok "$f: compact keeps the contents, frees space ($before -> $(stat -c %b "$D/c.$f") blocks)"
	else
		fail "$f: compact keeps the contents, frees space ($before -> $(stat -c %b "$D/c.$f") blocks)"
	fi
	if [ $f = vdi ]; then
		check "vdi: compact shrinks the file ($size_before -> $(stat -c %s "$D/c.$f") bytes)" \
			test "$(stat -c %s "$D/c.$f")" -lt "$size_before"
	fi
	if [ $f != raw ]; then
		"$IMGTOOL" check -q "$D/c.$f"
		rc=$?
		check "$f: check after compact is clean (exit $rc)" test $rc = 0
	fi

	# convert -n into an existing image: all old data replaced
	"$IMGTOOL" create -q -f $f "$D/n.$f" 64M
	qemu-io -f $q -c 'write -P 0x99 0 64M' "$D/n.$f" >/dev/null
	if "$IMGTOOL" convert -n -O $f "$SRC" "$D/n.$f" &&
		[ "$(our_sum "$D/n.$f")" = "$SRC_SHA" ]; then
		ok "$f: convert -n overwrites an existing image exactly"
	else
		fail "$f: convert -n overwrites an existing image exactly"
	fi

	# -S 0: no zero detection, zeros written (raw: fully allocated)
	if "$IMGTOOL" convert -S 0 -O $f "$SRC" "$D/s0.$f" &&
		[ "$(our_sum "$D/s0.$f")" = "$SRC_SHA" ] &&
		{ [ $f != raw ] || [ "$(stat -c %b "$D/s0.$f")" -gt $((60 * 2048)) ]; }; then
		ok "$f: convert -S 0 writes every byte"
	else
		fail "$f: convert -S 0 writes every byte"
	fi

	# to every other format and back: same checksum
	for g in vdi vhd vmdk; do
		have_format $g || continue
		rm -f "$D/xg.$g"
		if "$IMGTOOL" convert -O $g "$X" "$D/xg.$g" &&
			[ "$(our_sum "$D/xg.$g")" = "$SRC_SHA" ]; then
			ok "$f -> $g: convert keeps the contents"
		else
			fail "$f -> $g: convert keeps the contents"
		fi
	done
	rm -rf "$D"
done

# several sources are concatenated
qemu-img create -q -f raw "$T/a.raw" 1M
qemu-io -f raw -c 'write -P 0x61 0 1M' "$T/a.raw" >/dev/null
if "$IMGTOOL" convert -O raw "$T/a.raw" "$SRC" "$T/cat.raw" &&
	[ "$(sha "$T/cat.raw")" = "$(cat "$T/a.raw" "$SRC" | sha256sum | cut -d' ' -f1)" ]; then
	ok "convert concatenates several sources"
else
	fail "convert concatenates several sources"
fi

# compare: size differences
qemu-img create -q -f raw "$T/big.raw" 65M
dd if="$SRC" of="$T/big.raw" conv=notrunc status=none
"$IMGTOOL" compare -q "$SRC" "$T/big.raw"
check "compare: a longer image with a zero tail is identical" test $? = 0
"$IMGTOOL" compare -q -s "$SRC" "$T/big.raw"
check "compare -s: different sizes differ (exit 1)" test $? = 1
"$IMGTOOL" compare "$SRC" "$T/missing.raw" 2>/dev/null
check "compare: a missing image is an error (exit 2)" test $? = 2

# usage errors exit 2 with one line
for cmd in convert checksum compare map check resize measure compact snapshot commit rebase; do
	"$IMGTOOL" $cmd --bogus-option >/dev/null 2>"$T/err"
	rc=$?
	check "$cmd: unknown option exits 2 with one line" test $rc = 2 -a "$(wc -l <"$T/err")" = 1
	"$IMGTOOL" $cmd --help >"$T/help" 2>&1
	check "$cmd --help" grep -q "^Usage: imgtool $cmd" "$T/help"
done

# convert onto its own source (or the source's parent) is refused, untouched
cp "$SRC" "$T/self.raw"
"$IMGTOOL" convert -O raw "$T/self.raw" "$T/self.raw" 2>"$T/err"
check "convert onto its own source: refused with one line, file intact" \
	test $? = 1 -a "$(wc -l <"$T/err")" = 1 -a "$(sha "$T/self.raw")" = "$SRC_SHA"
if have_format vmdk; then
	"$IMGTOOL" convert -O vmdk "$SRC" "$T/pbase.vmdk"
	"$IMGTOOL" create -q -f vmdk -b pbase.vmdk "$T/pchild.vmdk"
	"$IMGTOOL" convert -O vmdk "$T/pchild.vmdk" "$T/pbase.vmdk" 2>/dev/null
	check "convert onto the source's backing file: refused, parent intact" \
		test $? = 1 -a "$(our_sum "$T/pbase.vmdk")" = "$SRC_SHA"
fi

# bash completion: commands, formats, snapshot names
export COMPLETION=$PWD/completion/imgtool.bash
comp() { # WORD... (the last one is being completed)
	bash -c 'source "$COMPLETION"; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _imgtool; echo "${COMPREPLY[*]}"' _ "$@"
}
check "completion: commands" test "$(comp imgtool conv)" = convert
check "completion: formats after -O" test "$(comp imgtool convert -O v)" = "vdi vhd vpc vhdx vmdk"
mkdir -p "$T/c.vdi.snapshots" && touch "$T/c.vdi.snapshots/before.vdi" "$T/c.vdi.snapshots/index"
check "completion: snapshot names" test "$(cd "$T" && comp imgtool snapshot revert c.vdi '')" = before
check "completion: --output values" test "$(comp imgtool map --output = j)" = json

# bad input: one-line error, no output written
"$IMGTOOL" convert -O raw "$T/missing.raw" "$T/out.raw" 2>"$T/err"
check "convert: missing source, one-line error, nothing written" \
	test $? = 1 -a "$(wc -l <"$T/err")" = 1 -a ! -e "$T/out.raw"
"$IMGTOOL" resize "$T/a.raw" 12Q 2>"$T/err"
check "resize: garbage size exits 2 with one line" \
	test $? = 2 -a "$(wc -l <"$T/err")" = 1

finish
