#!/bin/bash
# run-e2e.sh [SCRIPT...]: run the end-to-end scripts (default: every
# tests/e2e/*.sh), show each one's last line, and total the
# "N passed, M failed" lines.  Non-zero exit if any case or script failed.
set -u
cd "$(dirname "$0")/.."
B=${B:-build}
export B
export IMGTOOL=${IMGTOOL:-$PWD/$B/bin/imgtool}
export IMGVM=${IMGVM:-$PWD/$B/bin/imgvm}
scripts=("$@")
[ ${#scripts[@]} -gt 0 ] || scripts=(tests/e2e/*.sh)
total_pass=0
total_fail=0
for s in "${scripts[@]}"; do
	[ -e "$s" ] || continue
	log=$(mktemp "${TMPDIR:-/tmp}/e2e.XXXXXX")
	start=$(date +%s)
	bash "$s" >"$log" 2>&1
	rc=$?
	secs=$(($(date +%s) - start))
	last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
	if [ -n "$last" ]; then
		p=${last%% passed*}
		f=${last#*, }
		f=${f%% failed*}
	else
		p=0
		f=1
		last="(no summary line; exit $rc)"
	fi
	# A script that fails without counting a failure still fails.
	[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f))
	printf '%-32s %s (%ss)\n' "$(basename "$s")" "$last" "$secs"
	if [ "$f" -ne 0 ] || [ -n "${E2E_VERBOSE:-}" ]; then
		grep -E 'FAIL|not ok' "$log" | head -20 | sed 's/^/    /'
	fi
	rm -f "$log"
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
