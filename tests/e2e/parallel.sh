#!/bin/bash
# Parallel requests on one handle: tests/helpers/parallel_io on every
# format and subformat (4 threads of random writes, reads, flushes, zeroes
# and discards anywhere on the disk, meeting in the same blocks and
# clusters, checked against a model, reopened, checked clean), then the
# image against the model with qemu-img compare and qemu-img check, where
# qemu-img reads the format.  `make check SANITIZE=thread` runs this
# script under ThreadSanitizer.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
PIO=$PWD/$B/tests/helpers/parallel_io
THREADS=${PARALLEL_THREADS:-4}
OPS=${PARALLEL_OPS:-2000}
have_qemu=false
command -v qemu-img >/dev/null && have_qemu=true

for spec in raw vdi vdi:static vhd:dynamic vhd:fixed vhd+diff \
	vmdk:monolithicSparse vmdk:monolithicFlat vmdk:twoGbMaxExtentSparse \
	vmdk+diff qcow2 qcow2:cluster_size=4096 qcow2:extended_l2=on \
	qcow2+diff qcow2+compress vhdx vhdx:block_size=1M vhdx+diff; do
	d=$T/${spec//[:+=,]/-}
	mkdir -p "$d"
	if out=$("$PIO" "$spec" "$d" "$THREADS" "$OPS" 2>&1); then
		ok "$spec: $THREADS threads x $OPS random requests on one handle match the model, before and after a reopen"
	else
		fail "$spec: $out"
		continue
	fi
	$have_qemu || continue
	fmt=${spec%%[:+]*}
	img=$d/parallel.$fmt
	qfmt=$fmt
	[ "$fmt" = vhd ] && qfmt=vpc
	case $spec in
	vhd+diff | vhdx+diff)
		# qemu's vpc driver reads a differencing VHD without its
		# parent; its vhdx driver refuses differencing images
		skip "$spec: qemu-img compare" "qemu-img does not read this image's parent"
		;;
	*)
		if qemu-img compare -q -f "$qfmt" -F raw "$img" "$d/model.raw" >"$d/cmp" 2>&1; then
			ok "$spec: qemu-img compare: the image reads as the model"
		else
			fail "$spec: qemu-img compare: $(head -3 "$d/cmp")"
		fi
		;;
	esac
	case $fmt in
	vdi | vmdk | qcow2 | vhdx)
		[ "$spec" = vhdx+diff ] && continue
		if qemu-img check -q -f "$fmt" "$img" >"$d/check" 2>&1; then
			ok "$spec: qemu-img check clean after the parallel run"
		else
			fail "$spec: qemu-img check: $(head -3 "$d/check")"
		fi
		;;
	esac
done
# One thread, so the order is fixed: overwrites free every compressed
# cluster in the host cluster that still had room for the next one.
d=$T/compress-reuse
mkdir -p "$d"
if out=$("$PIO" qcow2+compress "$d" 1 1000 2>&1); then
	ok "qcow2+compress: a host cluster freed under the compressed area's room is not written into after it is reused"
else
	fail "qcow2+compress, one thread: $out"
fi
finish
