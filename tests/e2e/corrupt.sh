#!/bin/bash
# Hostile files: flip random bytes in the metadata of valid images of each
# format and run info, check, map and convert on them.  Each run must end
# (bounded time), must not die by a signal, must print at most a clean
# one-line error on failure, and must never write to the corrupted file
# (only `check -r` may).  CORRUPT_ROUNDS per format (default 12; `make crashtest` uses 200).
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build}
IMGTOOL=$PWD/$B/bin/imgtool
ROUNDS=${CORRUPT_ROUNDS:-12}
T=$(mktemp -d /tmp/corrupt.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

# A 16 MiB source with data scattered over it.
python3 - "$T/src.raw" <<'EOF'
import random, sys
r = random.Random(5)
with open(sys.argv[1], 'wb') as f:
    f.truncate(16 << 20)
    for i in range(24):
        f.seek(r.randrange(0, (16 << 20) - 70000))
        f.write(r.randbytes(r.randrange(1, 65536)))
EOF

# flip.py FILE SEED REGION_END: flip 1-8 random bytes within the metadata
# (the first REGION_END bytes, and the last 512 bytes for VHD footers).
cat >"$T/flip.py" <<'EOF'
import os, random, sys
path, seed, region = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
size = os.path.getsize(path)
with open(path, 'r+b') as f:
    for _ in range(r.randrange(1, 9)):
        if r.random() < 0.2 and size > 512:
            off = r.randrange(size - 512, size)
        else:
            off = r.randrange(0, min(region, size))
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ (1 << r.randrange(8)) if r.random() < 0.7 else r.randrange(256)]))
EOF

run_bounded() { # LOG CMD...: runs with a 20 s limit; prints the exit status
	timeout -k 2 20 "$@" >"$T/out" 2>"$T/err"
	echo $?
}

for spec in vdi:vdi vhd:vpc vmdk:vmdk vmdk-stream:vmdk; do
	name=${spec%%:*} qfmt=${spec##*:}
	opts=""
	[ "$name" = vmdk-stream ] && opts="-o subformat=streamOptimized"
	[ "$name" = vhd ] && opts="-o subformat=dynamic"
	if ! "$IMGTOOL" create -q -f "${qfmt/vpc/vhd}" "$T/probe" 1M >/dev/null 2>&1; then
		echo "skip $name: format not in this build"
		continue
	fi
	qemu-img convert -f raw -O "$qfmt" $opts "$T/src.raw" "$T/good.$name" || { bad "$name: qemu-img convert"; continue; }
	region=$((256 * 1024))
	crashes=0 hangs=0 writes=0 multiline=0
	for ((i = 0; i < ROUNDS; i++)); do
		f=$T/bad.$name
		cp "$T/good.$name" "$f"
		python3 "$T/flip.py" "$f" $((i * 7 + 1)) $region
		sum=$(sha256sum <"$f")
		for cmd in "info" "info --output=json" "check" "map --output=json" "convert -O raw @ $T/out.raw" "checksum"; do
			args=(${cmd/@/$f})
			[[ $cmd == convert* ]] || args+=("$f")
			st=$(run_bounded "$IMGTOOL" "${args[@]}")
			rm -f "$T/out.raw"
			if [ "$st" = 124 ] || [ "$st" = 137 ]; then
				hangs=$((hangs + 1)); echo "  FAIL detail: hang: imgtool ${args[*]} (round $i)"
			elif [ "$st" -ge 128 ]; then
				crashes=$((crashes + 1)); echo "  FAIL detail: crash (status $st): imgtool ${args[*]} (round $i)"
				cp "$f" "$T/../corrupt-crash-$name-$i" 2>/dev/null
			elif [ "$st" != 0 ] && [ "$(wc -l <"$T/err")" -gt 1 ] && [[ $cmd != check* ]]; then
				multiline=$((multiline + 1)); echo "  FAIL detail: error is not one line: imgtool ${args[*]}: $(head -c 200 "$T/err")"
			fi
			[ "$(sha256sum <"$f")" = "$sum" ] || { writes=$((writes + 1)); echo "  FAIL detail: file changed by: imgtool ${args[*]}"; sum=$(sha256sum <"$f"); }
		done
	done
	if [ $crashes = 0 ] && [ $hangs = 0 ] && [ $writes = 0 ] && [ $multiline = 0 ]; then
		ok "$name: $ROUNDS corrupted images x 6 commands: no crash, no hang, no write, one-line errors"
	else
		bad "$name: $crashes crashes, $hangs hangs, $writes writes, $multiline multi-line errors"
	fi
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
