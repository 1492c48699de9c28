#!/bin/bash
# run-e2e.sh [SCRIPT...]: run the end-to-end scripts (default: every
# tests/e2e/*.sh), show each one's last line and its failures, and total
# the "N passed, M failed" lines.  Non-zero exit if any case or script
# failed.  E2E_JOBS=N runs up to N scripts at once (default 2; results are
# still printed in order), except the E2E_SERIAL ones (default: the scripts
# that boot VMs, whose guests have timeouts), which run one after another
# beside them: they start first, at normal priority, while E2E_PRELUDE (a
# command, e.g. the unit tests, its output shown as it runs) and then the
# other scripts run under nice -n E2E_NICE (default 10), so that the
# nested test host's boot and its guests' idle moments overlap the rest of
# the suite and its vCPUs are not starved.  E2E_OVERLAP=0 runs the serial
# scripts afterwards, alone, instead.  E2E_VERBOSE=1 shows every script's
# full output.
set -u
cd "$(dirname "$0")/.."
B=${B:-build}
export B
# The tools make deps installed come first: a shim in front of them (a
# pyenv python3 costs ten process starts a call) makes the scripts slower
# and runs another program than the one the tests were written against.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
export IMGTOOL=${IMGTOOL:-$PWD/$B/bin/imgtool}
export IMGVM=${IMGVM:-$PWD/$B/bin/imgvm}
scripts=("$@")
[ ${#scripts[@]} -gt 0 ] || scripts=(tests/e2e/*.sh)
jobs=${E2E_JOBS:-2}
serial=${E2E_SERIAL-vmm*.sh}
logdir=$(mktemp -d "${TMPDIR:-/tmp}/e2e-logs.XXXXXX")
trap 'rm -rf "$logdir"' EXIT

run_one() { # INDEX SCRIPT [NICENESS]
	local start rc
	start=$(date +%s)
	nice -n "${3:-0}" bash "$2" >"$logdir/$1.log" 2>&1
	rc=$?
	echo "$rc $(($(date +%s) - start))" >"$logdir/$1.status"
}

is_serial() { # SCRIPT
	local - pat
	set -f # the patterns are for basenames, not for the cwd
	for pat in $serial; do
		# shellcheck disable=SC2053
		[[ $(basename "$1") == $pat ]] && return 0
	done
	return 1
}

run_serial() {
	local i
	for i in "${!scripts[@]}"; do
		[ -e "${scripts[$i]}" ] && is_serial "${scripts[$i]}" && run_one "$i" "${scripts[$i]}"
	done
}

overlap=${E2E_OVERLAP:-1}
niceness=${E2E_NICE:-10}
serial_pid=
prelude_rc=0
if [ "$overlap" = 1 ]; then
	run_serial &
	serial_pid=$!
fi
[ "$overlap" = 1 ] || niceness=0
if [ -n "${E2E_PRELUDE:-}" ]; then
	nice -n "$niceness" bash -c "$E2E_PRELUDE" || prelude_rc=1
fi
declare -A pids=()
for i in "${!scripts[@]}"; do
	[ -e "${scripts[$i]}" ] || continue
	is_serial "${scripts[$i]}" && continue
	if [ "$jobs" -le 1 ]; then
		run_one "$i" "${scripts[$i]}" "$niceness"
		continue
	fi
	run_one "$i" "${scripts[$i]}" "$niceness" &
	pids[$!]=1
	while [ ${#pids[@]} -ge "$jobs" ]; do
		wait -n -p done_pid "${!pids[@]}"
		unset "pids[$done_pid]"
	done
done
[ ${#pids[@]} -eq 0 ] || wait "${!pids[@]}"
if [ -n "$serial_pid" ]; then
	wait "$serial_pid"
else
	run_serial
fi

total_pass=0
total_fail=0
for i in "${!scripts[@]}"; do
	s=${scripts[$i]}
	[ -e "$logdir/$i.status" ] || continue
	read -r rc secs <"$logdir/$i.status"
	log=$logdir/$i.log
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
	# what a script retried (never silent), and where its logs stay
	grep -E '^# (RETRIED|.*retried: |.*stood still|.*lost wake-up|host side prepared|logs of this run)' "$log" | sed 's/^/    /'
	if [ -n "${E2E_VERBOSE:-}" ]; then
		sed 's/^/    /' "$log"
	elif [ "$f" -ne 0 ]; then
		grep -E 'FAIL|not ok' "$log" | head -20 | sed 's/^/    /'
		grep -qE 'FAIL|not ok' "$log" || tail -5 "$log" | sed 's/^/    /'
	fi
done
if [ "$prelude_rc" != 0 ]; then
	echo "e2e: $E2E_PRELUDE failed"
	total_fail=$((total_fail + 1))
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
