#!/bin/bash
# bench/display-first-screen.sh ISO REF.png: time from starting the VMM to
# the first frame of the Debian installer's graphical boot menu (isolinux
# vesamenu, VBE 640x480), imgvm --vnc against qemu-system-x86_64 -vga std
# -vnc on the same KVM, interleaved BENCH_PAIRS times (default 3).  A VNC
# viewer (tests/helpers/vnc_client match:) connects as soon as the VMM's
# socket exists and watches every update until the frame differs from
# REF.png (the menu, as display.bash compares it with QEMU's screendump)
# in less than 2 % of the pixels.  QEMU gets imgvm's serial-console
# firmware setting (etc/sercon-port), so that SeaBIOS does the same work
# in both.  Prints one line per run and the ratio of the medians (ours /
# QEMU's).  Needs /dev/kvm that runs firmware: on other hosts run it
# inside tests/nested-kvm.sh.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
TOP=$PWD
B=${B:-build}
ISO=${1:?usage: bench/display-first-screen.sh ISO REF.png}
REF=${2:?usage: bench/display-first-screen.sh ISO REF.png}
PAIRS=${BENCH_PAIRS:-3}
LIMIT=${FIRST_SCREEN_LIMIT:-240}
W=$(mktemp -d /tmp/display-first.XXXXXX)
trap 'rm -rf "$W"' EXIT
CLIENT=$TOP/$B/tests/helpers/vnc_client
# the same machine as QEMU's -M pc -vga std: no USB controller (imgvm adds
# its USB tablet with a screen unless told --pointer ps2)
IMGVM_MACHINE=${IMGVM_MACHINE---pointer ps2}
now() { date +%s.%N; }

# first NAME SOCKET COMMAND...: seconds from the start to the menu
first() {
	local name=$1 sock=$2 t0 pid end
	shift 2
	rm -f "$sock"
	t0=$(now)
	"$@" </dev/null >"$W/$name.out" 2>&1 &
	pid=$!
	end=$((SECONDS + LIMIT))
	while [ ! -S "$sock" ] && kill -0 $pid 2>/dev/null && [ $SECONDS -lt $end ]; do
		sleep 0.02
	done
	# a viewer that connected while the mode changed may be dropped
	# (QEMU sends the new size only once the viewer's encodings are in):
	# it connects again
	while [ $SECONDS -lt $end ] && kill -0 $pid 2>/dev/null; do
		if "$CLIENT" "$sock" "match:$REF,2,$(((end - SECONDS) * 1000)),16" >"$W/$name.match" 2>&1; then
			awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f\n", b - a }'
			kill $pid 2>/dev/null
			wait $pid 2>/dev/null
			return 0
		fi
		sleep 0.1
	done
	kill $pid 2>/dev/null
	wait $pid 2>/dev/null
	echo "$name: no menu within $LIMIT s: $(tail -n 2 "$W/$name.match" "$W/$name.out" | tr '\n' ' ')" >&2
	return 1
}

printf '\xf8\x03' >"$W/sercon"
ours=() peer=()
for i in $(seq "$PAIRS"); do
	# shellcheck disable=SC2086
	r=$(first imgvm "$W/imgvm.vnc" "$TOP/$B/bin/imgvm" boot --memory 1G --cdrom "$ISO" $IMGVM_MACHINE \
		--vnc "unix:$W/imgvm.vnc" --serial "file:$W/imgvm.log" --timeout $((LIMIT + 30))) || exit 1
	echo "run $i: imgvm $r s"
	ours+=("$r")
	r=$(first qemu "$W/qemu.vnc" qemu-system-x86_64 -enable-kvm -M pc -m 1024 -vga std \
		-cdrom "$ISO" -nic none -display none -vnc "unix:$W/qemu.vnc" \
		-serial "file:$W/qemu.log" -fw_cfg "name=etc/sercon-port,file=$W/sercon") || exit 1
	echo "run $i: qemu $r s"
	peer+=("$r")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
mo=$(median "${ours[@]}")
mp=$(median "${peer[@]}")
echo "start to the installer's graphical menu: imgvm $mo s, QEMU $mp s, ratio $(awk -v a="$mo" -v b="$mp" 'BEGIN{printf "%.2f", (b > 0) ? a / b : 0}')"
