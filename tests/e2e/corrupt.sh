#!/bin/bash
# Hostile files: flip random bytes in the metadata of valid images of each
# format and run info, check, map and convert on them.  Each run must end
# (bounded time), must not die by a signal, must print at most a clean
# one-line error on failure, and must never write to the corrupted file
# (only `check -r` may).  CORRUPT_ROUNDS per format (default 12; `make crashtest` uses 200).
# The formats run CORRUPT_JOBS at a time (default 2).
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build}
IMGTOOL=$PWD/$B/bin/imgtool
ROUNDS=${CORRUPT_ROUNDS:-12}
T=$(mktemp -d /tmp/corrupt.XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0

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

# flip.py GOOD PREFIX ROUNDS REGION_END: writes PREFIX.0 .. PREFIX.(ROUNDS-1),
# copies of GOOD with 1-8 random bytes flipped within the metadata (the
# first REGION_END bytes, and the last 512 bytes for VHD footers).  One
# python start per format rather than one per round.
cat >"$T/flip.py" <<'EOF'
import random, sys
good, prefix, rounds, region = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = open(good, 'rb').read()
size = len(data)
for i in range(rounds):
    r = random.Random(i * 7 + 1)
    b = bytearray(data)
    for _ in range(r.randrange(1, 9)):
        if r.random() < 0.2 and size > 512:
            off = r.randrange(size - 512, size)
        else:
            off = r.randrange(0, min(region, size))
        b[off] = b[off] ^ (1 << r.randrange(8)) if r.random() < 0.7 else r.randrange(256)
    with open('%s.%d' % (prefix, i), 'wb') as f:
        f.write(b)
EOF

# run_bounded WORKDIR CMD...: runs with a 20 s limit; its exit status in st.
# (No subshell, and below no checksum per command: process starts are
# most of this script's time.)
run_bounded() {
	local w=$1
	shift
	timeout -k 2 20 "$@" >"$w/out" 2>"$w/err"
	st=$?
}

# One format in its own directory: detail lines, then one ok/FAIL line.
corrupt_format() { # NAME QEMU_FORMAT
	local name=$1 qfmt=$2 opts="" w=$T/$1 region=$((256 * 1024))
	local crashes=0 hangs=0 writes=0 multiline=0 i f sum st cmd args
	mkdir -p "$w"
	[ "$name" = vmdk-stream ] && opts="-o subformat=streamOptimized"
	[ "$name" = vhd ] && opts="-o subformat=dynamic"
	[ "$name" = qcow2-small ] && opts="-o cluster_size=4096"
	[ "$name" = qcow2-compressed ] && opts="-c"
	# VHDX metadata spans the first MiBs: headers, log, metadata, BAT
	[ "$name" = vhdx ] && opts="-o block_size=1M" && region=$((4 * 1024 * 1024))
	if ! "$IMGTOOL" create -q -f "${qfmt/vpc/vhd}" "$w/probe" 1M >/dev/null 2>&1; then
		echo "skip $name: format not in this build"
		return
	fi
	qemu-img convert -f raw -O "$qfmt" $opts "$T/src.raw" "$w/good" || {
		echo "FAIL $name: qemu-img convert"
		return
	}
	python3 "$T/flip.py" "$w/good" "$w/bad" "$ROUNDS" $region
	for ((i = 0; i < ROUNDS; i++)); do
		f=$w/bad.$i
		sum=$(sha256sum <"$f")
		# a write changes the file's time (bash's -nt reads it to the
		# nanosecond); the checksum after the round catches the rest
		touch -r "$f" "$w/stamp"
		for cmd in "info" "info --output=json" "check" "map --output=json" "convert -O raw @ $w/out.raw" "checksum"; do
			args=(${cmd/@/$f})
			[[ $cmd == convert* ]] || args+=("$f")
			run_bounded "$w" "$IMGTOOL" "${args[@]}"
			[[ $cmd == convert* ]] && rm -f "$w/out.raw"
			if [ "$st" = 124 ] || [ "$st" = 137 ]; then
				hangs=$((hangs + 1)); echo "  FAIL detail: hang: imgtool ${args[*]} (round $i)"
			elif [ "$st" -ge 128 ]; then
				crashes=$((crashes + 1)); echo "  FAIL detail: crash (status $st): imgtool ${args[*]} (round $i)"
				cp "$f" "$T/../corrupt-crash-$name-$i" 2>/dev/null
			elif [ "$st" != 0 ] && [ "$(wc -l <"$w/err")" -gt 1 ] && [[ $cmd != check* ]]; then
				multiline=$((multiline + 1)); echo "  FAIL detail: error is not one line: imgtool ${args[*]}: $(head -c 200 "$w/err")"
			fi
			if [ "$f" -nt "$w/stamp" ] || [ "$w/stamp" -nt "$f" ]; then
				writes=$((writes + 1))
				echo "  FAIL detail: file changed by: imgtool ${args[*]}"
				touch -r "$f" "$w/stamp"
			fi
		done
		[ "$(sha256sum <"$f")" = "$sum" ] || { writes=$((writes + 1)); echo "  FAIL detail: file changed in round $i, its time kept"; }
		rm -f "$f"
	done
	if [ $crashes = 0 ] && [ $hangs = 0 ] && [ $writes = 0 ] && [ $multiline = 0 ]; then
		echo "ok   $name: $ROUNDS corrupted images x 6 commands: no crash, no hang, no write, one-line errors"
	else
		echo "FAIL $name: $crashes crashes, $hangs hangs, $writes writes, $multiline multi-line errors"
	fi
}

specs=(vdi:vdi vhd:vpc vmdk:vmdk vmdk-stream:vmdk qcow2:qcow2 qcow2-small:qcow2
	qcow2-compressed:qcow2 vhdx:vhdx)
running=0
for spec in "${specs[@]}"; do
	corrupt_format "${spec%%:*}" "${spec##*:}" >"$T/${spec%%:*}.log" 2>&1 &
	running=$((running + 1))
	if [ $running -ge "${CORRUPT_JOBS:-2}" ]; then
		wait -n
		running=$((running - 1))
	fi
done
wait
for spec in "${specs[@]}"; do
	log=$T/${spec%%:*}.log
	cat "$log"
	pass=$((pass + $(grep -c '^ok ' "$log")))
	fail=$((fail + $(grep -c '^FAIL ' "$log")))
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
