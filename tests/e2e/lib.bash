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

finish() {
	echo "$E2E_PASS passed, $E2E_FAIL failed"
	[ "$E2E_FAIL" -eq 0 ]
}
