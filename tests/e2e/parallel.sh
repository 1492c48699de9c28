#!/bin/bash
# Parallel requests on one handle: tests/helpers/parallel_io on every
# format and subformat (4 threads of random writes, reads, flushes, zeroes
# and discards in their own stripes, checked against a model, reopened,
# checked clean), and qemu-img check on what it left where qemu-img reads
# the format.  `make check SANITIZE=thread` runs this script under
# ThreadSanitizer.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
PIO=$PWD/$B/tests/helpers/parallel_io
THREADS=${PARALLEL_THREADS:-4}
OPS=${PARALLEL_OPS:-2000}

for spec in raw vdi vdi:static vhd:dynamic vhd:fixed vmdk:monolithicSparse \
	vmdk:monolithicFlat vmdk:twoGbMaxExtentSparse; do
	d=$T/${spec//:/-}
	mkdir -p "$d"
	if out=$("$PIO" "$spec" "$d" "$THREADS" "$OPS" 2>&1); then
		ok "$spec: $THREADS threads x $OPS random requests on one handle match the model, before and after a reopen"
	else
		fail "$spec: $out"
		continue
	fi
	fmt=${spec%%:*}
	case $fmt in
	vdi | vmdk)
		command -v qemu-img >/dev/null || continue
		img=$d/parallel.$fmt
		if qemu-img check -q -f "$fmt" "$img" >"$d/check" 2>&1; then
			ok "$spec: qemu-img check clean after the parallel run"
		else
			fail "$spec: qemu-img check: $(head -3 "$d/check")"
		fi
		;;
	esac
done
finish
