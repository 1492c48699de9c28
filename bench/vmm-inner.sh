#!/bin/bash
# Runs where /dev/kvm can run firmware (hardware KVM or the nested test
# host).  Env: PAIRS, IMGVM, GUEST (tests/guest/build-test-iso.sh output),
# OUT (rows file), FIO_ISO (fiobench.iso, or empty for no fio rows),
# BASE (0: skip the runs on local VDIs), RBD_FIO (1: the fio guest on Ceph
# RBD).
# Interleaves imgvm and QEMU: install to INSTALL-OK on a fresh dynamic VDI,
# then bench.iso on a 512 MiB dynamic VDI, then fiobench.iso (4 KiB random
# reads and writes at queue depths 1 and 32, NCQ) on another one; with
# RBD_FIO=1, fiobench.iso once more per pair on a 512 MiB raw RBD image of
# a single-node cluster (one monitor, one memstore OSD) started here, with
# QEMU's rbd driver as the peer.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d /tmp/vmm-bench.XXXXXX)
# the consoles and the VMMs' stderr of the last pair stay beside OUT
# (a failed run's included)
LOGS=$(dirname "$OUT")/vmm-logs
CLUSTER=
trap 'mkdir -p "$LOGS"; cp "$T"/*.log "$T"/*.err "$LOGS"/ 2>/dev/null; rm -rf "$T"
	[ -z "$CLUSTER" ] || { "$ROOT/tests/ceph/ceph-single-node.sh" stop "$CLUSTER/ceph"; rm -rf "$CLUSTER"; }' EXIT
MEM=512
TMO=900
: >"$OUT"

# own_rss PID: resident KiB of PID outside its guest RAM (the mappings of
# at least MEM MiB, which both VMMs allocate in one piece).
own_rss() {
	awk -v m=$((MEM * 1024)) '/^[0-9a-f]+-[0-9a-f]+ /{big=0}
		/^Size:/{big=($2>=m)} /^Rss:/{t+=$2; if(big) g+=$2}
		END{print (NR>0)?t-g:0}' "/proc/$1/smaps" 2>/dev/null || echo 0
}

# timed LOG PATTERN CMD...: runs CMD (serial console to LOG), prints
# "seconds_to_PATTERN total_seconds maxrss_kib exit max_own_rss_kib"
# (pattern time -1 if never); the VMM is time's grandchild (time, timeout).
timed() {
	local log=$1 pat=$2 t0 tp=-1 now pid vmm="" n=0 own=0 o
	shift 2
	t0=$(date +%s%N)
	/usr/bin/time -f '%M' -o "$T/rss" timeout -k 5 $TMO "$@" </dev/null >"$T/stdout" 2>"$log.err" &
	pid=$!
	while kill -0 $pid 2>/dev/null; do
		if [ "$tp" = -1 ] && grep -qa "$pat" "$log" 2>/dev/null; then tp=$(date +%s%N); fi
		if [ $((n++ % 10)) = 0 ]; then
			[ -n "$vmm" ] || vmm=$(pgrep -P "$(pgrep -P $pid | head -n1)" | head -n1)
			if [ -n "$vmm" ]; then
				o=$(own_rss "$vmm")
				[ "${o:-0}" -gt $own ] && own=$o
			fi
		fi
		sleep 0.05
	done
	wait $pid
	local st=$?
	now=$(date +%s%N)
	[ "$tp" = -1 ] && grep -qa "$pat" "$log" 2>/dev/null && tp=$now
	awk -v a="$t0" -v p="$tp" -v b="$now" -v r="$(tail -n1 "$T/rss")" -v s="$st" -v o="$own" \
		'BEGIN{printf "%.2f %.2f %d %d %d\n", (p<0)?-1:(p-a)/1e9, (b-a)/1e9, r, s, o}'
}
qemu_base=(qemu-system-x86_64 -enable-kvm -M q35 -m $MEM -smp 1 -nographic -vga none -nic none
	-no-reboot -monitor none -bios /usr/share/seabios/bios-256k.bin)
median() { sort -n | awk '{v[NR]=$1} END{print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
# fio_iops LOG RW QD: the IOPS of the guest's "BENCH fio RW qdQD: N IOPS"
fio_iops() { tr -d '\r' <"$1" | sed -n "s/.*BENCH fio $2 qd$3: \([0-9]*\) IOPS.*/\1/p" | tail -n1; }
# fio_qdepth LOG: the disk's queue depth as the guest saw it (> 1: NCQ)
fio_qdepth() { tr -d '\r' <"$1" | sed -n 's/.*BENCH fio queue_depth: \([0-9a-z]*\).*/\1/p' | tail -n1; }
fio_tests=("randread 1" "randread 32" "randwrite 1" "randwrite 32")
# fiov["o randread 32"]: that side's figures, one per pair (fiov["o rbdrandread
# 32"] on RBD); fioqd["o rbd"]: the queue depth the guest's disk got there
declare -A fiov=() fioqd=()
ft_o=- ft_q=-

# fio_run SIDE KEY DISK: fiobench.iso under imgvm (SIDE o, DISK an imgvm
# --disk) or QEMU (SIDE q, DISK a -drive without its id); console in
# $T/SIDEfKEY.log, the seconds to BENCH-DONE in ft_SIDE
fio_run() {
	local log=$T/$1f$2.log r
	if [ "$1" = o ]; then
		r=$(timed "$log" BENCH-DONE "$IMGVM" boot --memory ${MEM}M --cpus 1 --no-reboot \
			--cdrom "$FIO_ISO" --disk "$3" --serial "file:$log")
		ft_o=${r%% *}
	else
		r=$(timed "$log" BENCH-DONE "${qemu_base[@]}" -serial "file:$log" \
			-drive if=none,id=cd0,file="$FIO_ISO",media=cdrom,readonly=on -device ide-cd,bus=ide.1,drive=cd0,bootindex=0 \
			-drive "if=none,id=hd0,$3" -device ide-hd,bus=ide.0,drive=hd0,bootindex=1)
		ft_q=${r%% *}
	fi
}
# fio_collect KEY: both sides' IOPS of pair $i into fiov["o KEYrandread 32"]
# and fiov["q ..."], or the end of the run when one side failed
fio_collect() {
	local key=$1 side t v
	for side in o q; do
		grep -qa 'BENCH fio verify crc32c: OK' "$T/${side}f$key.log" ||
			{ echo "fio${key:+ on $key} ($side) failed: $(tr -d '\r' <"$T/${side}f$key.log" | grep -a -E 'BENCH|FAIL' | tail -n 12) $(cat "$T/${side}f$key.log.err") [logs: $LOGS]"; exit 1; }
		for t in "${fio_tests[@]}"; do
			v=$(fio_iops "$T/${side}f$key.log" $t)
			[ -n "$v" ] || { echo "fio${key:+ on $key} ($side): no $t figure"; exit 1; }
			fiov["$side $key$t"]+="$v "
		done
	done
	fioqd["o $key"]=$(fio_qdepth "$T/of$key.log") fioqd["q $key"]=$(fio_qdepth "$T/qf$key.log")
	echo "pair $i fio${key:+ on $key} (IOPS, randread qd1 qd32, randwrite qd1 qd32; queue depth; s to BENCH-DONE):" \
		"imgvm $(for t in "${fio_tests[@]}"; do fio_iops "$T/of$key.log" $t; done | tr '\n' ' ')qd ${fioqd["o $key"]} $ft_o s;" \
		"qemu $(for t in "${fio_tests[@]}"; do fio_iops "$T/qf$key.log" $t; done | tr '\n' ' ')qd ${fioqd["q $key"]} $ft_q s" >&2
}

ours_i=() peer_i=() ours_r=0 peer_r=0 ours_own=0 peer_own=0
ow=() pw=() orr=() prr=()
for ((i = 0; i < PAIRS; i++)); do
	[ "${BASE:-1}" = 1 ] || break
	rm -f "$T"/*.vdi "$T"/*.log
	"$IMGVM" --version >/dev/null
	qemu-img create -q -f vdi "$T/o.vdi" 2G
	r=$(timed "$T/o.log" INSTALL-OK "$IMGVM" boot --memory ${MEM}M --cpus 1 --no-reboot \
		--cdrom "$GUEST/installer.iso" --disk "$T/o.vdi" --serial "file:$T/o.log")
	set -- $r
	grep -qa INSTALL-OK "$T/o.log" || { echo "imgvm install failed: $(tail -c 400 "$T/o.log") $(cat "$T/o.log.err")"; exit 1; }
	ours_i+=("$1"); [ "$3" -gt $ours_r ] && ours_r=$3; [ "$5" -gt $ours_own ] && ours_own=$5
	qemu-img create -q -f vdi "$T/q.vdi" 2G
	r=$(timed "$T/q.log" INSTALL-OK "${qemu_base[@]}" -serial "file:$T/q.log" \
		-drive if=none,id=cd0,file="$GUEST/installer.iso",media=cdrom,readonly=on -device ide-cd,bus=ide.1,drive=cd0,bootindex=0 \
		-drive if=none,id=hd0,file="$T/q.vdi",format=vdi -device ide-hd,bus=ide.0,drive=hd0,bootindex=1)
	set -- $r
	grep -qa INSTALL-OK "$T/q.log" || { echo "qemu install failed: $(tail -c 400 "$T/q.log") $(cat "$T/q.log.err")"; exit 1; }
	peer_i+=("$1"); [ "$3" -gt $peer_r ] && peer_r=$3; [ "$5" -gt $peer_own ] && peer_own=$5
	echo "pair $i install: imgvm ${ours_i[-1]} s, qemu ${peer_i[-1]} s" >&2

	qemu-img create -q -f vdi "$T/ob.vdi" 512M
	timed "$T/ob.log" BENCH-DONE "$IMGVM" boot --memory ${MEM}M --cpus 1 --no-reboot \
		--cdrom "$GUEST/bench.iso" --disk "$T/ob.vdi" --serial "file:$T/ob.log" >/dev/null
	qemu-img create -q -f vdi "$T/qb.vdi" 512M
	timed "$T/qb.log" BENCH-DONE "${qemu_base[@]}" -serial "file:$T/qb.log" \
		-drive if=none,id=cd0,file="$GUEST/bench.iso",media=cdrom,readonly=on -device ide-cd,bus=ide.1,drive=cd0,bootindex=0 \
		-drive if=none,id=hd0,file="$T/qb.vdi",format=vdi -device ide-hd,bus=ide.0,drive=hd0,bootindex=1 >/dev/null
	for side in o q; do
		grep -qa 'BENCH verify: OK' "$T/${side}b.log" || { echo "bench ($side) failed: $(tr -d '\r' <"$T/${side}b.log" | grep -a BENCH) $(cat "$T/${side}b.log.err") [logs: $LOGS]"; exit 1; }
		w=$(tr -d '\r' <"$T/${side}b.log" | sed -n 's/.*BENCH seq-write bs=1M: \([0-9.]*\) MB\/s.*/\1/p')
		rd=$(tr -d '\r' <"$T/${side}b.log" | sed -n 's/.*BENCH seq-read bs=1M: \([0-9.]*\) MB\/s.*/\1/p')
		if [ $side = o ]; then ow+=("$w"); orr+=("$rd"); else pw+=("$w"); prr+=("$rd"); fi
	done
	echo "pair $i bench: imgvm write ${ow[-1]} read ${orr[-1]} MB/s; qemu write ${pw[-1]} read ${prr[-1]} MB/s" >&2

	[ -n "${FIO_ISO:-}" ] || continue
	# /tmp is a tmpfs in the nested host: one fully written 512 MiB VDI
	# at a time
	rm -f "$T"/*b.vdi
	qemu-img create -q -f vdi "$T/of.vdi" 512M
	fio_run o "" "$T/of.vdi"
	rm -f "$T/of.vdi"
	qemu-img create -q -f vdi "$T/qf.vdi" 512M
	fio_run q "" "file=$T/qf.vdi,format=vdi"
	rm -f "$T/qf.vdi"
	fio_collect ""
done
# the fio guest on RBD: one cluster for every pair; its OSD keeps the
# objects in memory (tmpfs has no O_DIRECT for bluestore), so one image
# at a time
if [ "${RBD_FIO:-0}" = 1 ] && [ -n "${FIO_ISO:-}" ]; then
	CLUSTER=$(mktemp -d /dev/shm/rbd-bench.XXXXXX)
	CEPH_OBJECTSTORE=memstore CEPH_STORE_MB=1024 "$ROOT/tests/ceph/ceph-single-node.sh" start "$CLUSTER/ceph" \
		>"$T/ceph.log" 2>"$T/ceph.err" || { echo "rbd: the cluster did not start: $(tail -n 3 "$T/ceph.err")"; exit 1; }
	conf=$CLUSTER/ceph/ceph.conf
	for ((i = 0; i < PAIRS; i++)); do
		rbd -c "$conf" create --size 512M rbd/fio-o || { echo "rbd create failed"; exit 1; }
		fio_run o rbd "rbd:rbd/fio-o:conf=$conf"
		rbd -c "$conf" rm rbd/fio-o >/dev/null 2>&1
		rbd -c "$conf" create --size 512M rbd/fio-q || { echo "rbd create failed"; exit 1; }
		fio_run q rbd "file=rbd:rbd/fio-q:conf=$conf,format=raw"
		rbd -c "$conf" rm rbd/fio-q >/dev/null 2>&1
		fio_collect rbd
	done
fi
row() { echo "$1|$2|$3|$4|$5|$6|$7|$8" >>"$OUT"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b>0)?a/b:0}'; }
if [ "${BASE:-1}" = 1 ]; then
	oi=$(printf '%s\n' "${ours_i[@]}" | median); pi=$(printf '%s\n' "${peer_i[@]}" | median)
	row "vmm start to INSTALL-OK (vdi)" "qemu-system -enable-kvm" "$oi" "$pi" "$(ratio "$oi" "$pi")" "-" $((ours_r / 1024)) $((peer_r / 1024))
	row "vmm own RSS beyond guest RAM, install (MiB)" "qemu-system -enable-kvm" $((ours_own / 1024)) $((peer_own / 1024)) \
		"$(ratio $ours_own $peer_own)" - - -
	a=$(printf '%s\n' "${ow[@]}" | median); b=$(printf '%s\n' "${pw[@]}" | median)
	row "vmm guest seq write 1M (MB/s)" "qemu-system -enable-kvm" "$a" "$b" "$(ratio "$b" "$a")" "$a / $b" - -
	a=$(printf '%s\n' "${orr[@]}" | median); b=$(printf '%s\n' "${prr[@]}" | median)
	row "vmm guest seq read 1M (MB/s)" "qemu-system -enable-kvm" "$a" "$b" "$(ratio "$b" "$a")" "$a / $b" - -
fi
# fio_rows KEY WHERE: the four fio rows of fiov's KEY figures
fio_rows() {
	local key=$1 where=$2 t a b txt
	for t in "${fio_tests[@]}"; do
		set -- $t
		a=$(printf '%s\n' ${fiov["o $key$t"]} | median); b=$(printf '%s\n' ${fiov["q $key$t"]} | median)
		txt="$a / $b"
		# the queue depth the guest's disk got: NCQ or not
		[ "$2" = 32 ] && txt="$txt (queue depth ${fioqd["o $key"]} / ${fioqd["q $key"]})"
		row "vmm guest 4K $1 QD$2$where (IOPS)" "qemu-system -enable-kvm" "$a" "$b" "$(ratio "$b" "$a")" "$txt" - -
	done
}
[ "${BASE:-1}" != 1 ] || [ -z "${FIO_ISO:-}" ] || fio_rows "" ""
[ "${RBD_FIO:-0}" != 1 ] || [ -z "${FIO_ISO:-}" ] || fio_rows rbd " on RBD"
