# Shared by the tests/e2e/*.sh scripts: source it, call ok/fail (or check)
# per case, and `finish` at the end.  Prints "ok - NAME" / "FAIL - NAME"
# lines and the final "N passed, M failed" that scripts/run-e2e.sh totals.
# shellcheck shell=bash
B=${B:-build}
IMGTOOL=${IMGTOOL:-$PWD/$B/bin/imgtool}
IMGVM=${IMGVM:-$PWD/$B/bin/imgvm}
E2E_PASS=0
E2E_FAIL=0

ok() {
	E2E_PASS=$((E2E_PASS + 1))
	echo "ok - $*"
}

fail() {
	E2E_FAIL=$((E2E_FAIL + 1))
	echo "FAIL - $*"
}

# check NAME COMMAND...: the case passes when the command exits 0.
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else fail "$name"; fi
}

# skip NAME WHY: counted as neither.
skip() {
	echo "skip - $1: $2"
}

# A scratch directory removed at exit.
e2e_tmpdir() {
	E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/e2e.XXXXXX")
	trap 'rm -rf "$E2E_TMP"' EXIT
}

# start_server OUT ARGS...: run imgtool serve in the background and wait
# for its banner; SRV_URI is the first URI it prints.
start_server() {
	local out=$1
	shift
	# emptied first: the banner of a server that used OUT before must
	# not be taken for this one's
	: >"$out"
	"$IMGTOOL" serve "$@" >"$out" 2>"$out.err" &
	SRV_PID=$!
	for _ in $(seq 400); do
		# whole lines only: the banner may be caught mid-write
		SRV_URI=$(grep -a '^serving .* at .*$' "$out" 2>/dev/null |
			head -1 | sed 's/^serving .* at //')
		if [ -n "$SRV_URI" ] && [ "$(tail -c1 "$out" | od -An -c | tr -d ' ')" = '\n' ]; then
			return 0
		fi
		kill -0 "$SRV_PID" 2>/dev/null || break
		sleep 0.05
	done
	cat "$out.err" >&2
	return 1
}

# stop_server: SIGTERM; its status is the server's (0 once it has closed
# its images).
stop_server() {
	kill -TERM "$SRV_PID" 2>/dev/null
	wait "$SRV_PID"
}

# Helpers of the format scripts.
sha() { sha256sum "$1" | cut -d' ' -f1; }
# vsize FILE: the virtual size imgtool reports
vsize() { "$IMGTOOL" info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }
# qemu_vsize [FORMAT] FILE: the virtual size qemu-img reports
qemu_vsize() {
	local fmt=()
	[ $# -eq 2 ] && fmt=(-f "$1") && shift
	qemu-img info "${fmt[@]}" --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'
}

# rejects NAME FILE PATTERN COMMAND...: the command must fail with exactly
# one line on stderr matching PATTERN and leave FILE untouched.
rejects() {
	local name=$1 file=$2 pattern=$3 before after err
	shift 3
	err=$(mktemp)
	before=$(sha "$file")
	if "$@" >/dev/null 2>"$err"; then
		fail "$name: accepted"
		rm -f "$err"
		return
	fi
	after=$(sha "$file")
	if [ "$(wc -l <"$err")" -eq 1 ] && grep -qi -- "$pattern" "$err" && [ "$before" = "$after" ]; then
		ok "$name: $(cat "$err")"
	else
		fail "$name: $(head -3 "$err" | tr '\n' '|') (unchanged: $([ "$before" = "$after" ] && echo yes || echo NO))"
	fi
	rm -f "$err"
}

finish() {
	echo "$E2E_PASS passed, $E2E_FAIL failed"
	[ "$E2E_FAIL" -eq 0 ]
}
