#!/bin/bash
# make bench: each case against its peer in the same run, interleaved
# (ours, peer, ours, peer, ...), medians, ratio ours/peer, throughput and
# peak RSS.  Prints a table and writes bench/results/latest.md.
#
# Env: B (build dir, default build), BENCH_DIR (scratch, default
# /tmp/imgbench, needs about 10 GiB), BENCH_PAIRS (default 3),
# BENCH_CASES (space-separated glob patterns of case names, default all),
# BENCH_SIZE_MB (default 1024).
set -uo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
B=${B:-build}
IMGTOOL=$TOP/$B/bin/imgtool
IMGVM=$TOP/$B/bin/imgvm
PAIRS=${BENCH_PAIRS:-3}
W=${BENCH_DIR:-/tmp/imgbench}
SIZE_MB=${BENCH_SIZE_MB:-1024}
CASES=${BENCH_CASES:-}
OUT_MD=${BENCH_OUT:-$TOP/bench/results/latest.md}
mkdir -p "$W" "$TOP/bench/results" "$TOP/$B/bench"
say() { echo "bench: $*" >&2; }

[ -x "$IMGTOOL" ] || { say "build first: $IMGTOOL missing"; exit 1; }
have_cmd() { "$IMGTOOL" help "$1" >/dev/null 2>&1; }

# ---- inputs -----------------------------------------------------------
# mixed.raw: per 1 MiB block i, i%8 in 0..3 random data (half), i%8 == 4
# explicit zeros (an eighth), the rest never written (holes).
# full.raw: every byte random.
make_inputs() {
	local stamp="$SIZE_MB-v1"
	[ "$(cat "$W/.inputs" 2>/dev/null)" = "$stamp" ] && return 0
	say "making ${SIZE_MB} MiB inputs in $W"
	rm -f "$W"/*.raw
	python3 - "$W" "$SIZE_MB" <<'EOF'
import os, sys
w, mb = sys.argv[1], int(sys.argv[2])
blk = 1 << 20
rnd = open('/dev/urandom', 'rb')
with open(os.path.join(w, 'mixed.raw'), 'wb') as f:
    f.truncate(mb * blk)
    for i in range(mb):
        k = i % 8
        if k < 4:
            f.seek(i * blk); f.write(rnd.read(blk))
        elif k == 4:
            f.seek(i * blk); f.write(bytes(blk))
with open(os.path.join(w, 'full.raw'), 'wb') as f:
    for i in range(mb):
        f.write(rnd.read(blk))
EOF
	for img in mixed full; do
		qemu-img convert -f raw -O vmdk "$W/$img.raw" "$W/$img.vmdk"
		qemu-img convert -f raw -O vdi "$W/$img.raw" "$W/$img.vdi"
		qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$W/$img.raw" "$W/$img.vhd"
	done
	echo "$stamp" >"$W/.inputs"
}
# Inputs added after the stamp was set are made when missing.
make_extra_inputs() {
	local img
	for img in mixed full; do
		[ -e "$W/$img.vhdx" ] || qemu-img convert -f raw -O vhdx "$W/$img.raw" "$W/$img.vhdx"
	done
}

# ---- measuring --------------------------------------------------------
# run_one CMD: runs CMD through bash, prints "seconds maxrss_kib status"
run_one() {
	local t0 t1 rss st
	t0=$(date +%s%N)
	/usr/bin/time -f '%M' -o "$W/.rss" bash -o pipefail -c "$1" >/dev/null 2>"$W/.err"
	st=$?
	t1=$(date +%s%N)
	rss=$(tail -n1 "$W/.rss" 2>/dev/null)
	[[ $rss =~ ^[0-9]+$ ]] || rss=0
	awk -v a="$t0" -v b="$t1" -v r="$rss" -v s="$st" 'BEGIN{printf "%.3f %d %d\n", (b-a)/1e9, r, s}'
}
median() { sort -n | awk '{v[NR]=$1} END{if(NR==0){print "nan"; exit} print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }

ROWS=()
FAILS=()
# bench_case NAME BYTES PREP OURS PEER [PEERNAME]
# PREP runs (untimed) before every single run; commands are bash strings.
bench_case() {
	local name=$1 bytes=$2 prep=$3 ours=$4 peer=$5 peername=${6:-peer}
	local pat match=0 pats
	read -ra pats <<<"$CASES"
	[ ${#pats[@]} -eq 0 ] && match=1
	for pat in "${pats[@]}"; do [[ $name == $pat ]] && match=1; done
	[ $match = 1 ] || return 0
	local i r ot=() pt=() orss=0 prss=0 bad=""
	for ((i = 0; i < PAIRS; i++)); do
		for side in ours peer; do
			eval "$prep" >/dev/null 2>&1
			if [ $side = ours ]; then r=$(run_one "$ours"); else r=$(run_one "$peer"); fi
			set -- $r
			if [ "$3" != 0 ]; then
				bad="$side failed (exit $3): $(head -c 300 "$W/.err" | tr '\n' ' ')"
				break 2
			fi
			if [ $side = ours ]; then ot+=("$1"); [ "$2" -gt $orss ] && orss=$2
			else pt+=("$1"); [ "$2" -gt $prss ] && prss=$2; fi
		done
	done
	if [ -n "$bad" ]; then
		say "$name: $bad"
		FAILS+=("$name: $bad")
		ROWS+=("$name|$peername|failed|failed|-|-|-|-")
		return 0
	fi
	local om pm ratio tput
	om=$(printf '%s\n' "${ot[@]}" | median)
	pm=$(printf '%s\n' "${pt[@]}" | median)
	ratio=$(awk -v a="$om" -v b="$pm" 'BEGIN{printf "%.2f", (b>0)?a/b:0}')
	tput=$(awk -v n="$bytes" -v a="$om" -v b="$pm" 'BEGIN{printf "%.0f / %.0f", (a>0)?n/a/1048576:0, (b>0)?n/b/1048576:0}')
	ROWS+=("$name|$peername|$om|$pm|$ratio|$tput|$((orss / 1024))|$((prss / 1024))")
	printf '%-34s %-22s ours %7.3fs  peer %7.3fs  ratio %5s  MiB/s %s  RSS %d/%d MiB\n' \
		"$name" "$peername" "$om" "$pm" "$ratio" "$tput" $((orss / 1024)) $((prss / 1024))
}

# ---- cases ------------------------------------------------------------
convert_cases() {
	local img from ofmt qfmt opts
	for img in mixed full; do
		local bytes=$((SIZE_MB * 1048576))
		[ -e "$W/$img.qcow2" ] || qemu-img convert -f raw -O qcow2 "$W/$img.raw" "$W/$img.qcow2"
		while read -r from ofmt opts; do
			qfmt=$ofmt; [ "$ofmt" = vhd ] && qfmt=vpc
			local ifmt=$from; [ "$from" = vhd ] && ifmt=vpc
			local oo="" qo=""
			[ "$opts" != - ] && { oo="-o $opts"; qo="-o $opts"; }
			[ "$ofmt" = vhd ] && qo="-o subformat=dynamic,force_size=on"
			local dst=$W/out.$ofmt
			local label=""
			[ "$opts" != - ] && label=" ${opts#subformat=}"
			bench_case "convert $img $from->$ofmt$label" $bytes "rm -f $W/out.*" \
				"$IMGTOOL convert -f $from -O $ofmt $oo $W/$img.$from $dst" \
				"qemu-img convert -t writeback -f $ifmt -O $qfmt $qo $W/$img.$from $dst" "qemu-img convert -t writeback"
		done <<EOF
raw vmdk -
vmdk vdi -
vdi vhd -
vhd raw -
raw vhdx -
vhdx raw -
vmdk vmdk subformat=streamOptimized
raw qcow2 -
qcow2 raw -
qcow2 vdi -
EOF
		# Compressed qcow2 (every core here, one thread in qemu-img
		# by default); random data does not compress: mixed only.
		if [ "$img" = mixed ]; then
			bench_case "convert $img raw->qcow2 -c" $bytes "rm -f $W/out.*" \
				"$IMGTOOL convert -c -f raw -O qcow2 $W/$img.raw $W/out.qcow2" \
				"qemu-img convert -t writeback -c -f raw -O qcow2 $W/$img.raw $W/out.qcow2" "qemu-img convert -c -t writeback"
		fi
		# The physical limit of a durable copy: cp, then fsync of
		# the copy (sync FILE), as imgtool convert syncs its target.
		bench_case "convert $img raw->raw" $bytes "rm -f $W/out.*" \
			"$IMGTOOL convert -f raw -O raw $W/$img.raw $W/out.raw" \
			"cp --sparse=always $W/$img.raw $W/out.raw && sync $W/out.raw" "cp --sparse=always + sync"
	done
}

checksum_cases() {
	have_cmd checksum || { say "checksum: not in this build, skipped"; return; }
	local img fmt q bytes=$((SIZE_MB * 1048576))
	for img in mixed full; do
		for fmt in vmdk vdi; do
			# qemu-img cannot write to a pipe: its image reader is
			# qemu-nbd, streamed by nbdcopy into sha256sum.
			bench_case "checksum $img $fmt" $bytes : \
				"$IMGTOOL checksum -f $fmt $W/$img.$fmt" \
				"nbdcopy -- [ qemu-nbd -r -f $fmt $W/$img.$fmt ] - | sha256sum" \
				"qemu-nbd + nbdcopy + sha256sum"
		done
		bench_case "checksum $img raw" $bytes : \
			"$IMGTOOL checksum -f raw $W/$img.raw" "sha256sum $W/$img.raw" "sha256sum"
	done
}

# NBD: our server and qemu-nbd on a Unix socket, started per run (prep),
# stopped after it; nbdcopy for sequential read/write, a libnbd program for
# 4 KiB random reads with 16 requests in flight.
NBD_SOCK=$W/nbd.sock
stop_servers() {
	[ -f "$W/server.pid" ] && { kill "$(cat "$W/server.pid")" 2>/dev/null; sleep 0.2; }
	rm -f "$W/server.pid" "$NBD_SOCK"
}
wait_sock() { local i; for ((i = 0; i < 100; i++)); do [ -S "$NBD_SOCK" ] && return 0; sleep 0.05; done; return 1; }
start_ours() { # FILE [--read-only]
	stop_servers
	"$IMGTOOL" serve --socket "$NBD_SOCK" "$@" >/dev/null 2>&1 & echo $! >"$W/server.pid"
	wait_sock
}
start_qemu_nbd() { # FMT FILE [-r]
	stop_servers
	local f=$1; [ "$f" = vhd ] && f=vpc
	qemu-nbd -f "$f" -t --cache=writeback --aio=threads --socket="$NBD_SOCK" "${@:3}" "$2" >/dev/null 2>&1 & echo $! >"$W/server.pid"
	wait_sock
}
nbd_cases() {
	have_cmd serve || { say "serve: not in this build, skipped"; return; }
	cc -O2 -o "$TOP/$B/bench/nbd-randread" "$TOP/bench/nbd-randread.c" -lnbd || return
	local fmt bytes=$((SIZE_MB * 1048576)) uri="nbd+unix:///?socket=$NBD_SOCK"
	for fmt in vmdk vdi; do
		bench_case "nbd read full $fmt" $bytes : \
			"start_ours $W/full.$fmt --read-only && nbdcopy '$uri' null: ; stop_servers" \
			"start_qemu_nbd $fmt $W/full.$fmt -r && nbdcopy '$uri' null: ; stop_servers" "qemu-nbd"
		bench_case "nbd write full $fmt" $bytes "rm -f $W/w.$fmt; qemu-img create -q -f $fmt $W/w.$fmt ${SIZE_MB}M" \
			"start_ours $W/w.$fmt && nbdcopy --flush $W/full.raw '$uri'; stop_servers" \
			"start_qemu_nbd $fmt $W/w.$fmt && nbdcopy --flush $W/full.raw '$uri'; stop_servers" "qemu-nbd"
		bench_case "nbd randread 4k x 40000 $fmt" $((40000 * 4096)) : \
			"start_ours $W/full.$fmt --read-only && $TOP/$B/bench/nbd-randread '$uri' 40000 16; stop_servers" \
			"start_qemu_nbd $fmt $W/full.$fmt -r && $TOP/$B/bench/nbd-randread '$uri' 40000 16; stop_servers" "qemu-nbd"
	done
}
export -f start_ours start_qemu_nbd stop_servers wait_sock
export IMGTOOL W NBD_SOCK

fuse_cases() {
	have_cmd mount || { say "mount: not in this build, skipped"; return; }
	[ -e /dev/fuse ] || { say "fuse: /dev/fuse missing, skipped"; return; }
	local mnt=$W/mnt bytes=$((SIZE_MB * 1048576))
	mkdir -p "$mnt"
	"$IMGTOOL" mount -o ro "$W/full.vdi" "$mnt" || { say "mount failed"; return; }
	bench_case "fuse seq read full vdi" $bytes : \
		"dd if=$mnt/disk of=/dev/null bs=1M" "dd if=$W/full.raw of=/dev/null bs=1M" "read raw file"
	"$IMGTOOL" umount "$mnt" || fusermount3 -u "$mnt"
}

machine_md() {
	echo "- machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
	echo "- cpu: $(awk -F: '/model name/{print $2; exit}' /proc/cpuinfo | sed 's/^ *//')"
	echo "- imgtool $("$IMGTOOL" --version 2>/dev/null | head -n1); $(qemu-img --version | head -n1); $(nbdcopy --version 2>/dev/null | head -n1)"
	echo "- convert: imgtool convert syncs the target before it returns (the data is on disk when it says done); qemu-img convert's default target cache mode (unsafe) skips that sync, so the peer runs with -t writeback, which syncs the same way"
	echo "- image: ${SIZE_MB} MiB; mixed = half random, an eighth zero-filled, the rest never written; full = all random"
	echo "- $PAIRS interleaved pairs per case; times are medians; ratio = ours/peer time (lower is better); for the guest MB/s and IOPS rows, ratio = peer/ours (lower is better too)"
	[ -n "$VMM_WHERE" ] && echo "- VMM rows: both on $VMM_WHERE; guest RAM 512 MiB, 1 vCPU, AHCI disk on a dynamic VDI; RSS includes touched guest RAM"
	[ "$VMM_FIO" = 1 ] && echo "- VMM guest IOPS rows: $(fio --version) in the guest (fiobench.iso), one job, libaio, O_DIRECT, 4 KiB random on the raw 512 MiB disk, 20 s per run after 1 s ramp; the whole disk is written sequentially first, so every request hits an allocated VDI block; queue depth in the QD32 rows = the disk's /sys/block/sdX/device/queue_depth in the guest (32: NCQ); a crc32c-verified randwrite pass follows"
	[ "$VMM_RBD" = 1 ] && echo "- VMM guest IOPS rows on RBD: the same fio guest on a 512 MiB raw RBD image (imgvm --disk rbd:rbd/fio-o:conf=..., QEMU -drive file=rbd:...,format=raw through its rbd driver) of a single-node cluster started beside the VMs (one monitor, one memstore OSD: the nested host's /dev/shm has no O_DIRECT for bluestore), a new image for each run"
}

write_md() {
	{
		echo "# Benchmark results ($(date -u +%Y-%m-%d\ %H:%M) UTC)"
		echo
		machine_md
		echo
		echo "| case | peer | ours (s) | peer (s) | ratio | MiB/s ours / peer | peak RSS ours (MiB) | peak RSS peer (MiB) |"
		echo "|---|---|---|---|---|---|---|---|"
		local r
		for r in "${ROWS[@]}"; do echo "| ${r//|/ | } |"; done
		if [ ${#FAILS[@]} -gt 0 ]; then
			echo
			echo "Failures:"
			for r in "${FAILS[@]}"; do echo "- $r"; done
		fi
	} >"$OUT_MD"
}

trap stop_servers EXIT
make_inputs
make_extra_inputs
convert_cases
checksum_cases
nbd_cases
fuse_cases
. "$TOP/bench/backends.sh"
backend_cases
. "$TOP/bench/parallel.sh"
parallel_cases
VMM_WHERE="" VMM_FIO=0 VMM_RBD=0
if [ -x "$IMGVM" ]; then
	. "$TOP/bench/vmm.sh"
	vmm_cases
	. "$TOP/bench/net.sh"
	net_cases
	. "$TOP/bench/display.sh"
	display_cases
fi
write_md
say "wrote $OUT_MD"
[ ${#FAILS[@]} -eq 0 ]
