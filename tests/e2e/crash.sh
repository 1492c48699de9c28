#!/bin/bash
# Crash consistency sample (make check): the process writing to a dynamic
# image is killed with SIGKILL at spread-out points; check must find no
# corruption, repair leaks, and every flushed write must read back.
# `make crashtest` runs the same with CRASH_POINTS=1000 (per format).
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build}
CW=$B/tests/helpers/crashwrite
POINTS=${CRASH_POINTS:-50}
T=$(mktemp -d /tmp/crash.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
[ -x "$CW" ] || { echo "crash: $CW not built"; echo "0 passed, 1 failed"; exit 1; }
for spec in vdi vhd vhd:diff vmdk vmdk:twoGbMaxExtentSparse vdi:diff vmdk:diff; do
	fmt=${spec%%:*}
	n=$POINTS
	# the formats issue 11 names get every point; the other chains a sample
	case $spec in vdi:diff | vmdk:diff) n=$((POINTS / 5 + 1)) ;; esac
	if ! "$B/bin/imgtool" create -q -f "$fmt" "$T/probe.$fmt" 1M >/dev/null 2>&1; then
		echo "skip $spec: format $fmt not in this build"
		continue
	fi
	rm -f "$T"/probe.*
	if "$CW" -n "$n" "$T" "$spec"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
	# EIO injected at spread-out host I/O calls instead of a kill
	if "$CW" -e -n $((n / 5 + 1)) -s 7 "$T" "$spec"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
	if [ "${CRASH_RANDOM:-1}" = 1 ]; then
		if "$CW" -r -n $((n / 10 + 1)) -s 99 "$T" "$spec"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
	fi
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
