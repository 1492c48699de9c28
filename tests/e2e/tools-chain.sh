#!/bin/bash
# End-to-end: backing chains with imgtool: create -b, snapshot create/list/
# revert/delete, commit, rebase (safe and -u), convert -B, on vdi, vhd and
# vmdk; contents checked against sha256sum of raw references and, where
# qemu-img follows the chain (vmdk), with qemu-img compare.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP

have_format() { "$IMGTOOL" --help 2>&1 | grep -Eq "^Formats:.* $1( |\$)"; }
our_sum() { "$IMGTOOL" checksum "$1" | cut -d' ' -f1; }
# check exits 0: no corruption and no leaks.
clean() { "$IMGTOOL" check -q "$1"; }

# Three states of a 32 MiB disk: V0 the original, V1 and V2 later writes.
V0=$T/v0.raw V1=$T/v1.raw V2=$T/v2.raw
qemu-img create -q -f raw "$V0" 32M
qemu-io -f raw -c 'write -P 0x10 0 3M' -c 'write -P 0x11 9M 1M' \
	-c 'write -P 0x12 31M 1M' "$V0" >/dev/null
cp "$V0" "$V1"
qemu-io -f raw -c 'write -P 0x21 1M 64K' -c 'write -P 0x22 16M 2M' \
	-c 'write -z 9M 512K' "$V1" >/dev/null
cp "$V1" "$V2"
qemu-io -f raw -c 'write -P 0x31 5000 3000' -c 'write -P 0x32 20M 4M' \
	"$V2" >/dev/null
S0=$(sha "$V0") S1=$(sha "$V1") S2=$(sha "$V2")

for f in vdi vhd vmdk; do
	if ! have_format $f; then
		skip "$f" "driver not in this build"
		continue
	fi
	D=$T/$f
	mkdir -p "$D"
	DISK=$D/disk.$f

	# ---- snapshots ------------------------------------------------------
	"$IMGTOOL" convert -O $f "$V0" "$DISK"
	"$IMGTOOL" snapshot create -q "$DISK" s1
	check "$f: snapshot create s1, disk reads the same" \
		test "$(our_sum "$DISK")" = "$S0" -a -f "$DISK.snapshots/s1.$f"
	"$IMGTOOL" convert -n -O $f "$V1" "$DISK"
	check "$f: write after s1 (convert -n)" test "$(our_sum "$DISK")" = "$S1"
	"$IMGTOOL" snapshot create -q "$DISK" s2
	"$IMGTOOL" convert -n -O $f "$V2" "$DISK"
	check "$f: snapshot s2, write after it" test "$(our_sum "$DISK")" = "$S2"
	"$IMGTOOL" snapshot list "$DISK" >"$D/list"
	if [ "$(awk 'NR>1 {print $1}' "$D/list" | tr '\n' ' ')" = "(current) s2 s1 " ]; then
		ok "$f: snapshot list shows (current) s2 s1 with dates"
	else
		fail "$f: snapshot list: $(cat "$D/list")"
	fi
	check "$f: layers check clean" clean "$DISK"
	check "$f: snapshot layer s2 reads V1" \
		test "$(our_sum "$DISK.snapshots/s2.$f")" = "$S1"
	if [ $f = vmdk ]; then
		qemu-img compare -q -f raw -F vmdk "$V2" "$DISK"
		check "vmdk: qemu-img follows our snapshot chain" test $? = 0
	fi

	"$IMGTOOL" snapshot revert -q "$DISK" s2
	check "$f: revert s2 gives V1 back" test "$(our_sum "$DISK")" = "$S1"
	"$IMGTOOL" snapshot revert -q "$DISK" s1 2>/dev/null
	check "$f: revert s1 refused while s2 is newer" test $? = 1
	"$IMGTOOL" snapshot revert -q --force "$DISK" s1
	check "$f: revert --force s1 gives V0 back, s2 gone" \
		test "$(our_sum "$DISK")" = "$S0" -a ! -e "$DISK.snapshots/s2.$f"

	"$IMGTOOL" convert -n -O $f "$V1" "$DISK"
	"$IMGTOOL" snapshot create -q "$DISK" s3
	"$IMGTOOL" convert -n -O $f "$V2" "$DISK"
	"$IMGTOOL" snapshot delete -q "$DISK" s1
	check "$f: delete s1 (oldest) keeps V2" test "$(our_sum "$DISK")" = "$S2"
	check "$f: s3 now holds V1 by itself" \
		test "$(our_sum "$DISK.snapshots/s3.$f")" = "$S1" -a ! -e "$DISK.snapshots/s1.$f"
	"$IMGTOOL" snapshot delete -q "$DISK" s3
	check "$f: delete s3 (the last) keeps V2" test "$(our_sum "$DISK")" = "$S2"
	check "$f: check clean after the snapshot round" clean "$DISK"
	"$IMGTOOL" snapshot list "$DISK" >"$D/list"
	check "$f: no snapshots left" test "$(wc -l <"$D/list")" = 2
	"$IMGTOOL" snapshot delete -q "$DISK" nosuch 2>/dev/null
	check "$f: delete of an unknown snapshot fails" test $? = 1

	# ---- snapshots of a disk that already has a backing file ------------
	"$IMGTOOL" convert -O $f "$V0" "$D/gold.$f"
	"$IMGTOOL" create -q -f $f -b gold.$f "$D/vm.$f"
	"$IMGTOOL" convert -n -O $f "$V1" "$D/vm.$f"
	"$IMGTOOL" snapshot create -q "$D/vm.$f" a
	"$IMGTOOL" convert -n -O $f "$V2" "$D/vm.$f"
	"$IMGTOOL" snapshot create -q "$D/vm.$f" b
	check "$f: snapshots over a backing file: disk reads V2, a reads V1" \
		test "$(our_sum "$D/vm.$f")" = "$S2" -a "$(our_sum "$D/vm.$f.snapshots/a.$f")" = "$S1"
	"$IMGTOOL" snapshot revert -q --force "$D/vm.$f" a
	check "$f: revert to a over a backing file" test "$(our_sum "$D/vm.$f")" = "$S1"
	"$IMGTOOL" snapshot delete -q "$D/vm.$f" a
	check "$f: delete a: still V1, parent is the backing file again, clean" \
		test "$(our_sum "$D/vm.$f")" = "$S1" -a "$(our_sum "$D/gold.$f")" = "$S0"
	check "$f: vm checks clean" clean "$D/vm.$f"

	# ---- create -b, commit ---------------------------------------------
	"$IMGTOOL" convert -O $f "$V0" "$D/base.$f"
	"$IMGTOOL" create -q -f $f -b base.$f -F $f "$D/top.$f"
	check "$f: create -b takes the parent's size" \
		test "$("$IMGTOOL" info --output=json "$D/top.$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = 33554432
	check "$f: new child reads the parent" test "$(our_sum "$D/top.$f")" = "$S0"
	"$IMGTOOL" convert -n -O $f "$V1" "$D/top.$f"
	"$IMGTOOL" commit -q "$D/top.$f"
	check "$f: commit: base now reads V1" test "$(our_sum "$D/base.$f")" = "$S1"
	check "$f: commit: top still reads V1" test "$(our_sum "$D/top.$f")" = "$S1"
	check "$f: commit: base checks clean" clean "$D/base.$f"
	# -d keeps the child's data; the child must still open (VMDK CID)
	"$IMGTOOL" convert -O $f "$V0" "$D/base2.$f"
	"$IMGTOOL" create -q -f $f -b base2.$f "$D/keep.$f"
	"$IMGTOOL" convert -n -O $f "$V2" "$D/keep.$f"
	"$IMGTOOL" commit -q -d "$D/keep.$f"
	check "$f: commit -d: base reads V2, the kept child too" \
		test "$(our_sum "$D/base2.$f")" = "$S2" -a "$(our_sum "$D/keep.$f")" = "$S2"

	# ---- rebase ------------------------------------------------------------
	# top over base(V1) with V2's changes; rebase onto other(V0) keeps V2
	"$IMGTOOL" convert -n -O $f "$V2" "$D/top.$f"
	"$IMGTOOL" convert -O $f "$V0" "$D/other.$f"
	"$IMGTOOL" rebase -q -b other.$f "$D/top.$f"
	check "$f: rebase (safe) onto another parent keeps the contents" \
		test "$(our_sum "$D/top.$f")" = "$S2"
	"$IMGTOOL" info --output=json "$D/top.$f" >"$D/info.json"
	"$IMGTOOL" info --output=json "$D/other.$f" >"$D/other.json"
	if [ $f = vdi ]; then
		# VDI records its parent by UUID only
		check "$f: rebase recorded the new parent" test \
			"$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["parent-uuid"])' "$D/info.json")" = \
			"$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["uuid"])' "$D/other.json")"
	else
		check "$f: rebase recorded the new parent" \
			grep -q "other.$f" "$D/info.json"
	fi
	# -u: a copy of the parent under a new name
	cp "$D/other.$f" "$D/moved.$f"
	mv "$D/other.$f" "$D/other.$f.away"
	"$IMGTOOL" rebase -q -u -b moved.$f "$D/top.$f"
	check "$f: rebase -u onto a moved parent keeps the contents" \
		test "$(our_sum "$D/top.$f")" = "$S2"
	"$IMGTOOL" rebase -q -b "" "$D/top.$f"
	check "$f: rebase -b \"\" makes it standalone with the same contents" \
		test "$(our_sum "$D/top.$f")" = "$S2"
	rm -f "$D/moved.$f"
	check "$f: standalone image opens without its old parent" \
		test "$(our_sum "$D/top.$f")" = "$S2"

	# ---- convert -B ------------------------------------------------------
	"$IMGTOOL" convert -O $f -B base.$f "$V2" "$D/diff.$f"
	check "$f: convert -B: child reads V2" test "$(our_sum "$D/diff.$f")" = "$S2"
	full=$(stat -c %b "$D/top.$f")
	small=$(stat -c %b "$D/diff.$f")
	check "$f: convert -B writes only what differs ($small < $full blocks)" \
		test "$small" -lt "$full"
	check "$f: convert -B child checks clean" clean "$D/diff.$f"

	# ---- shrink then grow a child: the new room reads as zeros -------------
	# (not as the parent's data, which the shrink dropped from the child)
	if [ $f != vmdk ]; then # vmdk cannot shrink
		"$IMGTOOL" convert -O $f "$V0" "$D/rbase.$f"
		"$IMGTOOL" create -q -f $f -b "$D/rbase.$f" -F $f "$D/regrow.$f"
		"$IMGTOOL" resize -q --shrink "$D/regrow.$f" $((3 * 1048576 + 512))
		"$IMGTOOL" resize -q "$D/regrow.$f" 32M
		head -c $((3 * 1048576 + 512)) "$V0" >"$D/regrow.raw"
		truncate -s 32M "$D/regrow.raw"
		check "$f: shrink to 3M+512 then grow to 32M: the parent's data past 3M+512 reads as zeros" \
			test "$(our_sum "$D/regrow.$f")" = "$(sha "$D/regrow.raw")"
		check "$f: ... and checks clean" clean "$D/regrow.$f"
	fi
done

# ---- snapshot create on a full file system: FILE stays byte for byte ------
M=$T/small
mkdir -p "$M"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=12m tmpfs "$M" 2>/dev/null; then
	trap 'umount "$M" 2>/dev/null; rm -rf "$E2E_TMP"' EXIT
	qemu-img create -q -f raw "$T/s5.raw" 8M
	qemu-io -f raw -c 'write -P 0x41 0 5M' "$T/s5.raw" >/dev/null
	for f in vdi vhd vmdk; do
		have_format $f || continue
		rm -rf "${M:?}"/*
		"$IMGTOOL" convert -O $f "$T/s5.raw" "$M/base.$f"
		"$IMGTOOL" create -q -f $f -b base.$f "$M/snap.$f"
		"$IMGTOOL" convert -n -O $f "$T/s5.raw" "$M/snap.$f"
		cp "$M/snap.$f" "$T/before.$f"
		dd if=/dev/zero of="$M/filler" bs=4k status=none 2>/dev/null
		"$IMGTOOL" snapshot create "$M/snap.$f" s1 2>"$T/err"
		rc=$?
		rm -f "$M/filler"
		if [ $rc = 1 ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q "No space left" "$T/err" &&
			cmp -s "$M/snap.$f" "$T/before.$f" && [ ! -e "$M/snap.$f.snapshots" ] &&
			"$IMGTOOL" check -q "$M/snap.$f"; then
			ok "$f: snapshot create on a full fs: one line, FILE unchanged byte for byte"
		else
			fail "$f: snapshot create on a full fs (exit $rc: $(cat "$T/err"))"
		fi
		"$IMGTOOL" snapshot create -q "$M/snap.$f" s1
		check "$f: ... and it works once there is room" \
			test "$(our_sum "$M/snap.$f")" = "$(sha256sum "$T/s5.raw" | cut -d' ' -f1)"
	done
	umount "$M"
else
	skip "snapshot on a full fs" "cannot mount a small tmpfs (needs root)"
fi

finish
