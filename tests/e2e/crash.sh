#!/bin/bash
# Crash consistency sample (make check): the process writing to a dynamic
# image is killed with SIGKILL at spread-out points; check must find no
# corruption, repair leaks, and every flushed write must read back.
# `make crashtest` runs the same with CRASH_POINTS=1000 (per format).
# A sample also runs four writer threads on one handle, each flushing.
# The snapshot specs do the same to snapshot create/revert/delete.
# The formats are independent and run CRASH_JOBS at a time (default 2).
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build}
CW=$B/tests/helpers/crashwrite
POINTS=${CRASH_POINTS:-50}
T=$(mktemp -d /tmp/crash.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
[ -x "$CW" ] || { echo "crash: $CW not built"; echo "0 passed, 1 failed"; exit 1; }

# Snapshot operations (libimg/snapshot.c): the process taking, reverting
# and deleting snapshots between writes is killed at every host call
# (POINTS of them at most); the list and the disk must be before or after.
crash_snapshot() { # snapshot:FORMAT
	local fmt=${1#snapshot:} w=$T/snapshot-${1#snapshot:}
	mkdir -p "$w"
	if [ ! -x "$B/tests/helpers/crashsnap" ]; then
		echo "FAIL $1: $B/tests/helpers/crashsnap not built"
		return
	fi
	if "$B/tests/helpers/crashsnap" -n "$POINTS" "$w" "$fmt" 2>&1 | sed "s/^/  /"; then
		echo "ok   $1"
	else
		echo "FAIL $1"
	fi
}

# One spec in its own directory; one "ok"/"FAIL" line per harness run.
crash_spec() { # SPEC
	local spec=$1 fmt=${1%%:*} n=$POINTS w=$T/${1//[:=,]/-}
	case $spec in snapshot:*)
		crash_snapshot "$spec"
		return
		;;
	esac
	mkdir -p "$w"
	# every point for each format and for VHD chains; the other chains a sample
	case $spec in vdi:diff | vmdk:diff | qcow2:diff) n=$((POINTS / 5 + 1)) ;; esac
	if ! "$B/bin/imgtool" create -q -f "$fmt" "$w/probe.$fmt" 1M >/dev/null 2>&1; then
		echo "skip $spec: format $fmt not in this build"
		return
	fi
	rm -f "$w"/probe.*
	run() {
		if "$CW" "$@" "$w" "$spec" 2>&1 | sed "s/^/  /"; then echo "ok   $spec $*"; else echo "FAIL $spec $*"; fi
	}
	run -n "$n"
	# EIO injected at spread-out host I/O calls instead of a kill
	run -e -n $((n / 5 + 1)) -s 7
	# four writer threads on one handle, racing for allocation and flushes
	run -t 4 -n $((n / 5 + 1)) -s 11
	if [ "${CRASH_RANDOM:-1}" = 1 ]; then
		run -r -n $((n / 10 + 1)) -s 99
	fi
}

# qcow2 with 512-byte clusters: the writes allocate L2 tables and
# refcount blocks and outgrow the refcount table as they go.
specs=(vdi vhd vhd:diff vmdk vmdk:twoGbMaxExtentSparse vdi:diff vmdk:diff
	qcow2 qcow2:cluster_size=512,refcount_bits=64 qcow2:diff
	vhdx:block_size=1M vhdx:diff
	snapshot:vdi snapshot:vhd snapshot:vmdk snapshot:vhdx snapshot:qcow2)
running=0
for i in "${!specs[@]}"; do
	crash_spec "${specs[$i]}" >"$T/$i.log" 2>&1 &
	running=$((running + 1))
	if [ $running -ge "${CRASH_JOBS:-2}" ]; then
		wait -n
		running=$((running - 1))
	fi
done
wait
for i in "${!specs[@]}"; do
	cat "$T/$i.log"
	pass=$((pass + $(grep -c '^ok ' "$T/$i.log")))
	fail=$((fail + $(grep -c '^FAIL ' "$T/$i.log")))
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
