#!/bin/bash
# bench/display-idle.sh ISO [SECONDS [REF.png]]: CPU time of the VMM process while a
# guest sits on an idle graphical screen (the Debian installer's isolinux
# menu, VBE 640x480) with one VNC viewer connected (tests/helpers/
# vnc_client), imgvm --vnc against qemu-system-x86_64 -vga std -vnc, on the
# same KVM, interleaved BENCH_PAIRS times (default 3).  With REF.png (the
# menu) the window starts 5 s after a viewer first sees that screen,
# else 60 s after the start.  QEMU gets imgvm's
# firmware setting of a serial console (etc/sercon-port, which makes
# SeaBIOS poll the UART while a boot loader waits for a key), so that the
# two differ in the VMM only.  Prints one line
# per run and the ratio of the medians (ours / QEMU's).  Needs /dev/kvm
# that runs firmware: on other hosts run it inside tests/nested-kvm.sh.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
TOP=$PWD
B=${B:-build}
ISO=${1:?usage: bench/display-idle.sh ISO [SECONDS [REF.png]]}
WINDOW=${2:-30}
REF=${3:-}
# the same machine as QEMU's -M pc -vga std: no USB controller (imgvm adds
# its USB tablet with a screen unless told --pointer ps2)
IMGVM_MACHINE=${IMGVM_MACHINE---pointer ps2}
PAIRS=${BENCH_PAIRS:-3}
W=$(mktemp -d /tmp/display-idle.XXXXXX)
trap 'rm -rf "$W"' EXIT
CLIENT=$TOP/$B/tests/helpers/vnc_client

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# per thread (BENCH_THREADS=1): "TID:TICKS ..." to see where the time goes
thread_ticks() {
	local t
	for t in /proc/"$1"/task/*; do
		printf '%s:%s ' "${t##*/}" "$(awk '{print $14 + $15}' "$t/stat")"
	done
}

# measure NAME PID SOCKET: settle, then the CPU ticks during WINDOW
# seconds with a viewer attached
measure() {
	local name=$1 pid=$2 sock=$3 t0 t1 hz
	hz=$(getconf CLK_TCK)
	if [ -n "$REF" ]; then
		local end=$((SECONDS + 240))
		while [ ! -S "$sock" ] && [ $SECONDS -lt $end ]; do sleep 0.1; done
		# (a viewer dropped while the mode changed connects again)
		until "$CLIENT" "$sock" "match:$REF,2,$(((end - SECONDS) * 1000)),16" >/dev/null 2>&1; do
			[ $SECONDS -lt $end ] && kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		sleep 5
	else
		sleep 60 # boot to the menu (the nested host is slow)
	fi
	"$CLIENT" "$sock" wait:$(((WINDOW + 5) * 1000)) >/dev/null 2>&1 &
	local viewer=$!
	sleep 3
	t0=$(cpu_ticks "$pid")
	[ -n "${BENCH_THREADS:-}" ] && echo "$name threads before: $(thread_ticks "$pid")" >&2
	sleep "$WINDOW"
	t1=$(cpu_ticks "$pid")
	[ -n "${BENCH_THREADS:-}" ] && echo "$name threads after:  $(thread_ticks "$pid")" >&2
	wait $viewer 2>/dev/null
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	echo "$name $(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v w="$WINDOW" 'BEGIN{printf "%.3f", (b-a)/hz/w}')"
}

ours=() peer=()
for i in $(seq "$PAIRS"); do
	# shellcheck disable=SC2086
	"$TOP/$B/bin/imgvm" boot --memory 1G --cdrom "$ISO" --vnc "unix:$W/imgvm.vnc" $IMGVM_MACHINE \
		--serial "file:$W/imgvm.log" --timeout 600 </dev/null 2>"$W/imgvm.err" &
	r=$(measure imgvm $! "$W/imgvm.vnc")
	echo "run $i: $r CPU-s/s"
	ours+=("${r#* }")
	printf '\xf8\x03' >"$W/sercon"
	qemu-system-x86_64 -enable-kvm -M pc -m 1024 -vga std -cdrom "$ISO" -nic none \
		-display none -vnc "unix:$W/qemu.vnc" -serial "file:$W/qemu.log" \
		-fw_cfg "name=etc/sercon-port,file=$W/sercon" </dev/null >"$W/qemu.out" 2>&1 &
	r=$(measure qemu $! "$W/qemu.vnc")
	echo "run $i: $r CPU-s/s"
	peer+=("${r#* }")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
mo=$(median "${ours[@]}")
mp=$(median "${peer[@]}")
echo "idle graphical screen, one VNC viewer: imgvm $mo CPU-s/s, QEMU $mp CPU-s/s, ratio $(awk -v a="$mo" -v b="$mp" 'BEGIN{printf "%.2f", (b > 0) ? a / b : 0}')"
