#!/bin/bash
# run-unit.sh BIN...: run each Criterion test binary (its own output shows),
# then one summary line; non-zero exit if any binary failed.
set -u
passed=0
failed=0
failed_names=()
for bin in "$@"; do
	[ -x "$bin" ] || { echo "run-unit: $bin: not built" >&2; failed=$((failed + 1)); failed_names+=("$bin"); continue; }
	echo "== $(basename "$bin")"
	if "$bin" --jobs="${UNIT_JOBS:-2}"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failed_names+=("$(basename "$bin")")
	fi
done
echo "unit: $passed binaries passed, $failed failed${failed_names[*]:+ (${failed_names[*]})}"
[ "$failed" -eq 0 ]
