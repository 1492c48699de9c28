#!/bin/bash
# vmm-stops.sh [-r ROUNDS] [-n RUNS] [-c CASES] [-m VMMS] [-o DIR]
#
# Runs the guest cases that were seen to stop (a triple fault, an internal
# error, a hang) over and over inside the nested test host, with imgvm and
# with QEMU + KVM as the L2 VMM, and keeps for every run the console, the
# VMM's stderr, the firmware log and, at a stop, the vCPU state imgvm
# prints and the nested host's kernel log.  Not part of `make check`.
#
# The nested host is shared by everyone on the machine (one at a time), so
# the loop is ROUNDS short starts of it (default 1), each running every case
# with every VMM RUNS times (default 1); a round takes 5-10 minutes.
#   CASES  copy (the test guest writes 320 MiB through the page cache onto
#          its SATA disk, NCQ, then reads it back: COPY-OK), di (Debian's
#          installer to its language screen, as in vmm.sh), disks (the
#          installed test disk and a second one on AHCI port 2, which the
#          guest finds by its port), exits (exits per second without
#          KVM_CAP_SYNC_REGS, with imgvm's default and with every register
#          at every exit; imgvm only), starts (STARTS_N starts of an
#          empty machine to SeaBIOS's banner; imgvm only), default "copy di"
#   VMMS   imgvm, qemu (default "imgvm qemu")
#   DIR    default build/test-logs/vmm-stops/<UTC time>; every run in its
#          own folder, results in DIR/results (one line a run)
# Env: NK_AMD_PARAMS (e.g. "npt=0": shadow paging in the nested host) is
#      passed to tests/nested-kvm.sh and noted with each result;
#      STOPS_TIMEOUT per guest run (default 300 s).
# Prints "<case> <vmm> <npt> <result> <seconds>" for each run and a tally.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
B=${B:-build}
IMGVM=${IMGVM:-$ROOT/$B/bin/imgvm}
IMGTOOL=${IMGTOOL:-$ROOT/$B/bin/imgtool}
rounds=1 runs=1 cases="copy di" vmms="imgvm qemu" out=
while getopts r:n:c:m:o:h opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	n) runs=$OPTARG ;;
	c) cases=$OPTARG ;;
	m) vmms=$OPTARG ;;
	o) out=$OPTARG ;;
	*)
		sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))
TIMEOUT=${STOPS_TIMEOUT:-300}
npt=on
case " ${NK_AMD_PARAMS:-} " in *" npt=0 "*) npt=off ;; esac

# ---- one guest run, inside the nested host -------------------------------

# kvm_log DIR: what the nested host's kernel said about KVM
kvm_log() {
	dmesg 2>/dev/null | grep -aiE 'kvm|svm|npt|lockup|rcu' | tail -n 40 >"$1/l1-dmesg.txt"
}

copy_imgvm() { # DIR
	local d=$1
	"$IMGTOOL" create -q -f raw "$d/disk.raw" 384M
	timeout -k 10 $((TIMEOUT + 20)) "$IMGVM" boot --memory 512M --cdrom "$G/copy.iso" \
		--disk "$d/disk.raw" --no-reboot --timeout "$TIMEOUT" \
		--serial "file:$d/console.log" --firmware-log "$d/fw.log" </dev/null 2>"$d/vmm.err"
	echo $? >"$d/status"
}

copy_qemu() { # DIR
	local d=$1
	"$IMGTOOL" create -q -f raw "$d/disk.raw" 384M
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel kvm -M pc -m 512 -smp 1 \
		-display none -vga none -nic none -no-reboot -monitor none \
		-serial "file:$d/console.log" \
		-chardev "file,id=fw,path=$d/fw.log" -device isa-debugcon,iobase=0x402,chardev=fw \
		-device ahci,id=ahci0 \
		-drive if=none,id=hd0,file="$d/disk.raw",format=raw,cache=none,aio=threads \
		-device ide-hd,bus=ahci0.0,drive=hd0 \
		-drive if=none,id=cd0,file="$G/copy.iso",format=raw,media=cdrom,readonly=on \
		-device ide-cd,bus=ahci0.1,drive=cd0 -boot d </dev/null >"$d/vmm.err" 2>&1
	echo $? >"$d/status"
}

# disks: the installed test disk on port 0 and a blank one on port 2; the
# guest finds each by its port and writes the pattern to the second
disks_imgvm() {
	local d=$1
	"$IMGTOOL" convert -O vhd "$G/installed.raw" "$d/boot.vhd"
	"$IMGTOOL" create -q -f vmdk "$d/data.vmdk" 64M
	timeout -k 10 $((TIMEOUT + 20)) "$IMGVM" boot --disk "$d/boot.vhd" --disk "$d/data.vmdk" \
		--no-reboot --timeout "$TIMEOUT" --serial "file:$d/console.log" \
		--firmware-log "$d/fw.log" </dev/null 2>"$d/vmm.err"
	echo $? >"$d/status"
}
disks_qemu() {
	local d=$1
	cp "$G/installed.raw" "$d/boot.raw"
	"$IMGTOOL" create -q -f raw "$d/data.raw" 64M
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel kvm -M pc -m 512 -smp 1 \
		-display none -vga none -nic none -no-reboot -monitor none \
		-serial "file:$d/console.log" \
		-chardev "file,id=fw,path=$d/fw.log" -device isa-debugcon,iobase=0x402,chardev=fw \
		-device ahci,id=ahci0 \
		-drive if=none,id=hd0,file="$d/boot.raw",format=raw -device ide-hd,bus=ahci0.0,drive=hd0 \
		-drive if=none,id=hd2,file="$d/data.raw",format=raw -device ide-hd,bus=ahci0.2,drive=hd2 \
		</dev/null >"$d/vmm.err" 2>&1
	echo $? >"$d/status"
}

# exits: what KVM_CAP_SYNC_REGS costs.  Our own 64 KiB firmware reads the
# i8042's status port in a loop, one exit to imgvm each; 6 s each with no
# registers copied, with imgvm's default (the general registers at every
# exit, the segment and control registers at every 32nd), and with all of
# them at every exit; three times in turn.  Exits per second of each.
exits_imgvm() {
	local d=$1 mode i n
	python3 -c '
import sys
rom = bytearray(b"\xf4" * 65536)
rom[0xFF00:0xFF04] = bytes([0xE4, 0x64, 0xEB, 0xFC])   # in al, 0x64; jmp back
rom[0xFFF0:0xFFF3] = bytes([0xE9, 0x0D, 0xFF])         # jmp 0xff00
open(sys.argv[1], "wb").write(rom)' "$d/loop.bin"
	: >"$d/vmm.err"
	for i in 1 2 3; do
		for mode in none default every-exit; do
			case $mode in
			none) env IMGVM_NO_SYNC_REGS=1 IMGVM_STATS=1 "$IMGVM" boot --bios "$d/loop.bin" --timeout 6 </dev/null 2>"$d/$mode.$i.err" ;;
			default) env IMGVM_STATS=1 "$IMGVM" boot --bios "$d/loop.bin" --timeout 6 </dev/null 2>"$d/$mode.$i.err" ;;
			every-exit) env IMGVM_SYNC_SREGS_EVERY=1 IMGVM_STATS=1 "$IMGVM" boot --bios "$d/loop.bin" --timeout 6 </dev/null 2>"$d/$mode.$i.err" ;;
			esac
			n=$(grep -o '[0-9]* port exits' "$d/$mode.$i.err" | cut -d' ' -f1)
			echo "exits/s $mode: $((${n:-0} / 6))" >>"$d/vmm.err"
		done
	done
	# and the report of a triple fault with imgvm's default (as vmm.sh's
	# triple_fault job): the registers from the port exit before it
	python3 -c '
import sys
rom = bytearray(b"\xf4" * 65536)
rom[0xFF00:0xFF0A] = bytes([0xE4, 0x64, 0x2E, 0x0F, 0x01, 0x1E, 0x20, 0xFF, 0xCC, 0xF4])
rom[0xFF20:0xFF26] = bytes(6)
rom[0xFFF0:0xFFF3] = bytes([0xE9, 0x0D, 0xFF])
open(sys.argv[1], "wb").write(rom)' "$d/triple.bin"
	"$IMGVM" boot --bios "$d/triple.bin" --no-reboot --timeout 30 </dev/null 2>"$d/triple.err"
	echo "triple fault (status $?): $(cat "$d/triple.err")" >>"$d/vmm.err"
	cat "$d/vmm.err"
	grep -q 'exits/s every-exit: [1-9]' "$d/vmm.err" && grep -Eq 'RIP 0xff0[02] .*CS 0xf000 ' "$d/triple.err"
	echo $? >"$d/status"
}
exits_qemu() { echo 0 >"$1/status"; echo "exits: imgvm only" >"$1/vmm.err"; }

# starts: STARTS_N (default 40) starts of an empty machine, each ended by
# SIGTERM once SeaBIOS's banner is on the serial console; the memory and
# vCPUs alternate (512 MiB and 1 vCPU, 2 GiB and 2 vCPUs, as the net job).
# Every stop seen in make check came at a guest's start, before the
# firmware printed anything.  vmm.err gets each start's seconds to the
# firmware's first debugcon byte and to the banner; a start silent for
# 60 s counts as a stop (SIGKILL then; an L1 vCPU stuck in the guest is
# the nested host's watchdog's to report).
starts_imgvm() {
	local d=$1 i pid t0 tf tb mem cpus st silent=0
	: >"$d/vmm.err"
	for i in $(seq "${STARTS_N:-40}"); do
		if [ $((i % 2)) = 1 ]; then mem=512M cpus=1; else mem=2G cpus=2; fi
		rm -f "$d/console.log" "$d/fw.log"
		t0=$(date +%s.%N) tf= tb=
		"$IMGVM" boot --memory $mem --cpus $cpus --serial "file:$d/console.log" \
			--firmware-log "$d/fw.log" --timeout 120 </dev/null 2>"$d/start.err" &
		pid=$!
		while :; do
			now=$(date +%s.%N)
			[ -z "$tf" ] && [ -s "$d/fw.log" ] && tf=$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
			if grep -qa 'SeaBIOS (version' "$d/console.log" 2>/dev/null; then
				tb=$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
				break
			fi
			kill -0 $pid 2>/dev/null || break
			awk -v a="$t0" -v b="$now" 'BEGIN { exit !(b - a > 60) }' && break
			sleep 0.1
		done
		kill -TERM $pid 2>/dev/null
		st=0
		if [ -z "$tb" ]; then
			st=1 silent=$((silent + 1))
			echo "start $i ($mem, $cpus vCPU): silent for 60 s (firmware log: ${tf:-nothing})" \
				"$(cat "$d/start.err")" >>"$d/vmm.err"
			cp "$d/fw.log" "$d/fw.$i.log" 2>/dev/null
			kill -KILL $pid 2>/dev/null
		fi
		wait $pid
		echo "start $i $mem $cpus: firmware ${tf:--} s, banner ${tb:--} s" >>"$d/vmm.err"
	done
	echo "banner s: $(grep -o 'banner [0-9.]*' "$d/vmm.err" | cut -d' ' -f2 | sort -n | tr '\n' ' ')" >>"$d/vmm.err"
	[ $silent = 0 ]
	echo $? >"$d/status"
}
starts_qemu() { echo 0 >"$1/status"; echo "starts: imgvm only" >"$1/vmm.err"; }

di_run() { # DIR COMMAND...
	local d=$1
	shift
	python3 "$ROOT/tests/guest/serial-drive.py" --log "$d/console.log" --timeout "$TIMEOUT" \
		--until 'Select a language' --send Install '\t' \
		--send quiet ' vga=normal console=ttyS0,115200\r' -- "$@" >"$d/drive.log" 2>&1
	echo $? >"$d/status"
}
di_imgvm() {
	di_run "$1" sh -c 'exec "$0" boot --memory 1G --cdrom "$1" --timeout "$2" --firmware-log "$3/fw.log" 2>"$3/vmm.err"' \
		"$IMGVM" "$G/di-mini.iso" $((TIMEOUT + 10)) "$1"
}
di_qemu() {
	di_run "$1" sh -c 'exec qemu-system-x86_64 -accel kvm -M pc -m 1024 -smp 1 -display none -vga none \
		-nic none -no-reboot -monitor none -serial stdio \
		-chardev "file,id=fw,path=$1/fw.log" -device isa-debugcon,iobase=0x402,chardev=fw \
		-drive "if=none,id=cd0,file=$0,format=raw,media=cdrom,readonly=on" \
		-device ahci,id=ahci0 -device ide-cd,bus=ahci0.1,drive=cd0 -boot d 2>"$1/vmm.err"' \
		"$G/di-mini.iso" "$1"
}

# result DIR CASE: ok, or what the stop was
result() {
	local d=$1 c=$2 st
	st=$(cat "$d/status")
	case $c in
	copy) grep -qa 'COPY-OK' "$d/console.log" && [ "$st" = 0 ] && { echo ok; return; } ;;
	di | exits | starts) [ "$st" = 0 ] && { echo ok; return; } ;;
	disks) grep -qa 'MARKER-OK' "$d/console.log" && grep -qaE 'DISK-WRITE-OK port 2 sd[a-z]+ 131072' "$d/console.log" &&
		[ "$st" = 0 ] && { echo ok; return; } ;;
	esac
	if [ "$c" = starts ]; then
		echo "silent-$(grep -c 'silent for' "$d/vmm.err")-of-${STARTS_N:-40}"
	elif grep -qa 'triple fault' "$d/vmm.err" "$d/drive.log" 2>/dev/null; then
		echo triple-fault
	elif grep -qa 'internal error' "$d/vmm.err" "$d/drive.log" 2>/dev/null; then
		echo internal-error
	elif grep -qa 'COPY-FAIL' "$d/console.log"; then
		echo copy-fail
	elif grep -qa 'timeout' "$d/vmm.err" "$d/drive.log" 2>/dev/null || [ "$st" = 124 ]; then
		echo hang
	else
		echo "stop-$st"
	fi
}

if [ "${1:-}" = --inside ]; then
	OUT=$2 G=$3 round=$4 STAMP=$5
	for i in $(seq "$runs"); do
		for c in $cases; do
			for v in $vmms; do
				d=$OUT/$STAMP-r$round-$i-$c-$v
				mkdir -p "$d"
				[ "$v" = qemu ] && ! command -v qemu-system-x86_64 >/dev/null && continue
				t0=$(date +%s)
				"${c}_$v" "$d"
				r=$(result "$d" "$c")
				[ "$r" = ok ] || kvm_log "$d"
				rm -f "$d"/*.raw "$d"/*.vhd "$d"/*.vmdk # the logs stay, not the disks
				line="$c $v npt=$npt $r $(($(date +%s) - t0))s $(basename "$d")"
				echo "$line" >>"$OUT/results"
				echo "$line"
				[ "$r" = ok ] && [ "$c" != exits ] || echo "  $(tail -c 400 "$d/vmm.err" 2>/dev/null | tr '\n' ' ')"
			done
		done
	done
	exit 0
fi

# ---- on the host -----------------------------------------------------------

[ -n "$out" ] || out=$ROOT/$B/test-logs/vmm-stops/$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$out/guest" || exit 1
out=$(cd "$out" && pwd)
case " $cases " in *" copy "* | *" disks "*)
	tests/guest/build-test-iso.sh "$out/guest" >"$out/guest.log" 2>&1 || {
		echo "vmm-stops: the test guest did not build: $(tail -2 "$out/guest.log")" >&2
		exit 1
	} ;;
esac
case " $cases " in *" disks "*)
	tests/guest/make-installed-disk.sh "$out/guest" "$out/guest/installed.raw" 128 >>"$out/guest.log" 2>&1 ||
		{ echo "vmm-stops: make-installed-disk.sh failed" >&2; exit 1; } ;;
esac
case " $cases " in *" di "*) bash tests/e2e/vmm.sh --di-iso "$out/guest/di-mini.iso" ||
	{ echo "vmm-stops: no Debian installer ISO (debian-installer-12-netboot-amd64)" >&2; exit 1; } ;;
esac
echo "# logs in $out; nested paging in the nested host: $npt"
for r in $(seq "$rounds"); do
	NK_CONSOLE_LOG=$out/l1-console-$r.log tests/nested-kvm.sh -w "$ROOT" -w "$out" -t 900 -- \
		bash "$ROOT/tests/vmm-stops.sh" -n "$runs" -c "$cases" -m "$vmms" -- --inside "$out" "$out/guest" "$r" "$(date -u +%H%M%S)"
	echo "# round $r: nested-kvm.sh status $?"
done
echo "# tally (case vmm npt result count), all rounds in $out/results:"
awk '{ print $1, $2, $3, $4 }' "$out/results" 2>/dev/null | sort | uniq -c
