# shellcheck shell=bash
# Sourced by bench/run.sh (or run on its own: bash bench/parallel.sh):
# parallel requests where they matter, an image whose bytes sit behind a
# backend with latency.  A raw file and a fully allocated dynamic VDI are
# served by nbdkit's file plugin with the delay filter (2 ms per read and
# write) on a Unix socket; imgtool serve and qemu-nbd re-export that NBD
# URI with the format on top; fio (nbd engine) runs 4 KiB random reads and
# writes (50/50) at QD1 on one connection and at QD32 on each of 4
# connections.  Rows give IOPS of ours and qemu-nbd and the scaling
# (QD32x4 IOPS / QD1 IOPS) of each.  Then a write+verify pass (crc32c) at
# QD32x4 through each server, and qemu-img check of the VDI once all
# servers have stopped.  Last, the same QD32x4 load on a local VDI file in
# the page cache (no backend latency), where the NBD path is CPU-bound.
#
# Then the dynamic formats (dynamic VHD, monolithicSparse VMDK, qcow2,
# VHDX), each fully allocated (qemu-img convert of the same random data)
# behind the same 2 ms backend at QD32x4: this build, qemu-nbd, and, with
# PAR_BEFORE=/path/to/imgtool, a build from before those formats took
# writes in parallel, the three interleaved in every pair; then a
# write+verify pass through ours and a check of the image.
#
# Env (besides run.sh's): PAR_MB (image size, default 1024), PAR_SECONDS
# (fio runtime per run, default 10), PAR_THREADS (imgtool serve --threads,
# default 32: one worker per request in flight on a connection),
# PAR_BEFORE (see above), PAR_DYN_FORMATS (default "vhd vmdk qcow2 vhdx";
# empty: none), PAR_BASE (0: skip the raw and VDI rows).

PAR_MB=${PAR_MB:-1024}
PAR_SECONDS=${PAR_SECONDS:-10}
PAR_THREADS=${PAR_THREADS:-32}
PAR_BEFORE=${PAR_BEFORE:-}
PAR_DYN_FORMATS=${PAR_DYN_FORMATS-vhd vmdk qcow2 vhdx}
PAR_BASE=${PAR_BASE:-1}
PAR_ROWS=()
PAR_DYN_ROWS=()

# Stops whatever par_start_* started: the re-exporting server first (its
# last flush still goes to the backend), then nbdkit.
par_stop() {
	local p pid i
	for p in "$W"/par-front.pid "$W"/par-back.pid; do
		[ -f "$p" ] || continue
		pid=$(cat "$p")
		kill "$pid" 2>/dev/null
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.05
		done
	done
	rm -f "$W"/par-front.pid "$W"/par-back.pid "$W"/par-front.sock "$W"/par-back.sock
}
par_wait_sock() { local i; for ((i = 0; i < 100; i++)); do [ -S "$1" ] && return 0; sleep 0.05; done; return 1; }

# par_start_back FILE: nbdkit file plugin behind the delay filter
par_start_back() {
	nbdkit -U "$W/par-back.sock" -P "$W/par-back.pid" --filter=delay \
		file "$1" wdelay=2ms rdelay=2ms || return 1
	par_wait_sock "$W/par-back.sock"
}
# par_start_front ours|before|qemu FMT SOURCE: SOURCE is a file or an NBD
# URI; FMT as imgtool names it
par_start_front() {
	local side=$1 fmt=$2 src=$3 tool=$IMGTOOL
	[ "$side" = before ] && tool=$PAR_BEFORE
	if [ "$side" != qemu ]; then
		"$tool" serve --format "$fmt" --socket "$W/par-front.sock" \
			--shared 4 --threads "$PAR_THREADS" "$src" >/dev/null 2>"$W/par-front.err" &
	else
		[ "$fmt" = vhd ] && fmt=vpc
		qemu-nbd -f "$fmt" -t --shared=4 --cache=writeback --aio=threads \
			--socket="$W/par-front.sock" "$src" >/dev/null 2>"$W/par-front.err" &
	fi
	echo $! >"$W/par-front.pid"
	par_wait_sock "$W/par-front.sock"
}

# par_fio JOBS DEPTH [extra fio args]: prints total IOPS (reads + writes)
par_fio() {
	local jobs=$1 depth=$2
	shift 2
	fio --name=par --ioengine=nbd --uri="nbd+unix:///?socket=$W/par-front.sock" \
		--rw=randrw --rwmixread=50 --bs=4k --numjobs="$jobs" --iodepth="$depth" \
		--time_based --runtime="$PAR_SECONDS" --group_reporting \
		--output-format=json "$@" >"$W/par-fio.json" 2>"$W/par-fio.err" || return 1
	# the nbd engine prints "connected" lines before the JSON
	python3 -c 'import json,sys; s=open(sys.argv[1]).read(); j=json.loads(s[s.index("{"):])["jobs"][0]; print("%.0f" % (j["read"]["iops"] + j["write"]["iops"]))' "$W/par-fio.json"
}

# par_verify: 4 jobs each write their own 32 MiB at QD32 with crc32c and
# read it back; 0 when fio saw no mismatch.
par_verify() {
	fio --name=parv --ioengine=nbd --uri="nbd+unix:///?socket=$W/par-front.sock" \
		--rw=randwrite --bs=4k --numjobs=4 --iodepth=32 --size=32m \
		--offset_increment=64m --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --verify_state_save=0 --group_reporting >"$W/par-verify.log" 2>&1 &&
		! grep -q "verify: bad" "$W/par-verify.log"
}

par_median() { sort -n | awk '{v[NR]=$1} END{if(NR==0){print 0; exit} printf "%.0f\n", (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }

# par_measure LABEL FMT SOURCE JOBS DEPTH [delay]: interleaved pairs,
# prints "ours_median peer_median"
par_measure() {
	local fmt=$2 src=$3 jobs=$4 depth=$5 delay=${6:-} i side v o=() p=()
	for ((i = 0; i < PAIRS; i++)); do
		for side in ours qemu; do
			if [ -n "$delay" ]; then
				par_start_back "$src" || { echo "0 0"; return 1; }
				par_start_front $side "$fmt" "nbd+unix:///?socket=$W/par-back.sock" || { par_stop; echo "0 0"; return 1; }
			else
				par_start_front $side "$fmt" "$src" || { par_stop; echo "0 0"; return 1; }
			fi
			v=$(par_fio "$jobs" "$depth") || v=0
			par_stop
			say "parallel: $1 $side run $((i + 1)): $v IOPS"
			if [ $side = ours ]; then o+=("$v"); else p+=("$v"); fi
		done
	done
	echo "$(printf '%s\n' "${o[@]}" | par_median) $(printf '%s\n' "${p[@]}" | par_median)"
}

par_ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b>0)?a/b:0}'; }

# par_dyn_cases: the dynamic formats' rows (see the top)
par_dyn_cases() {
	local fmt qfmt opts img side i v sides vok st
	local -A runs
	sides=(ours qemu)
	[ -n "$PAR_BEFORE" ] && sides=(before ours qemu)
	for fmt in $PAR_DYN_FORMATS; do
		case $fmt in
		vhd) qfmt=vpc opts=(-o subformat=dynamic) ;;
		vmdk) qfmt=vmdk opts=(-o subformat=monolithicSparse) ;;
		*) qfmt=$fmt opts=() ;;
		esac
		img=$W/par-dyn.$fmt
		say "parallel: making an allocated ${PAR_MB} MiB $fmt ${opts[*]}"
		# ours makes the VHD: qemu-img rounds a VHD's size up to its
		# CHS geometry and leaves the blocks past the data unallocated,
		# and a file behind NBD cannot grow to take them
		if [ "$fmt" = vhd ]; then
			"$IMGTOOL" convert -q -f raw -O vhd "${opts[@]}" "$W/par.raw" "$img"
		else
			qemu-img convert -f raw -O "$qfmt" "${opts[@]}" "$W/par.raw" "$img"
		fi || {
			FAILS+=("parallel: making the $fmt image failed")
			continue
		}
		runs=()
		for ((i = 0; i < PAIRS; i++)); do
			for side in "${sides[@]}"; do
				v=0
				if par_start_back "$img" &&
					par_start_front "$side" "$fmt" "nbd+unix:///?socket=$W/par-back.sock"; then
					v=$(par_fio 4 32) || v=0
				fi
				par_stop
				say "parallel: $fmt QD32x4 $side run $((i + 1)): $v IOPS"
				runs[$side]+="$v "
			done
		done
		for side in "${sides[@]}"; do
			runs[$side]=$(printf '%s\n' ${runs[$side]} | par_median)
		done
		vok=""
		if par_start_back "$img" && par_start_front ours "$fmt" "nbd+unix:///?socket=$W/par-back.sock" &&
			par_verify; then vok="ours ok"; else
			vok="ours FAILED"
			FAILS+=("parallel: $fmt verify through ours failed, see $W/par-verify.log")
		fi
		par_stop
		if [ "$qfmt" = vpc ]; then
			"$IMGTOOL" check "$img" >"$W/par-check.log" 2>&1 && st="imgtool check clean" || st="imgtool check FAILED"
		else
			qemu-img check -f "$qfmt" "$img" >"$W/par-check.log" 2>&1 && st="qemu-img check clean" || st="qemu-img check FAILED"
		fi
		[[ $st == *FAILED ]] && FAILS+=("parallel: $st on $img, see $W/par-check.log")
		PAR_DYN_ROWS+=("$fmt${opts[1]:+ ${opts[1]#subformat=}}|${runs[before]:--}|${runs[ours]}|${runs[qemu]}|$(
			[ -n "$PAR_BEFORE" ] && par_ratio "${runs[ours]}" "${runs[before]}" || echo -)|$(
			par_ratio "${runs[ours]}" "${runs[qemu]}")|$vok; $st")
		say "parallel: $fmt QD32x4: before ${runs[before]:--}, ours ${runs[ours]}, qemu-nbd ${runs[qemu]} IOPS"
		ROWS+=("parallel $fmt 2ms-nbd QD32x4 randrw 4k IOPS|qemu-nbd|${runs[ours]}|${runs[qemu]}|$(par_ratio "${runs[qemu]}" "${runs[ours]}")|-|-|-")
		rm -f "$img"
	done
}

parallel_cases() {
	local pats match=0 pat
	read -ra pats <<<"$CASES"
	[ ${#pats[@]} -eq 0 ] && match=1
	for pat in "${pats[@]}"; do [[ "parallel" == $pat ]] && match=1; done
	[ $match = 1 ] || return 0
	command -v fio >/dev/null && fio --enghelp 2>/dev/null | grep -qw nbd ||
		{ say "parallel: fio with the nbd engine missing, skipped"; return; }
	command -v nbdkit >/dev/null && nbdkit --dump-plugin file >/dev/null 2>&1 &&
		nbdkit --filter=delay null --dump-plugin >/dev/null 2>&1 ||
		{ say "parallel: nbdkit or its delay filter missing, skipped"; return; }
	command -v qemu-nbd >/dev/null || { say "parallel: qemu-nbd missing, skipped"; return; }

	local fmt src q1o q1p q32o q32p pco pcp os ps st vok load side
	say "parallel: making ${PAR_MB} MiB raw and allocated VDI in $W"
	head -c $((PAR_MB << 20)) /dev/urandom >"$W/par.raw" &&
		qemu-img convert -f raw -O vdi "$W/par.raw" "$W/par.vdi" || {
		say "parallel: making the images failed"
		FAILS+=("parallel: making the images failed")
		return
	}
	load=$(cut -d' ' -f1-3 /proc/loadavg)
	local base_fmts=(raw vdi)
	[ "$PAR_BASE" = 0 ] && base_fmts=()
	for fmt in "${base_fmts[@]}"; do
		src=$W/par.$fmt
		read -r q1o q1p <<<"$(par_measure "$fmt QD1" $fmt "$src" 1 1 delay)"
		read -r q32o q32p <<<"$(par_measure "$fmt QD32x4" $fmt "$src" 4 32 delay)"
		os=$(par_ratio "$q32o" "$q1o")
		ps=$(par_ratio "$q32p" "$q1p")
		vok=""
		for side in ours qemu; do
			par_start_back "$src" && par_start_front $side $fmt "nbd+unix:///?socket=$W/par-back.sock" &&
				par_verify && vok+="$side ok " || {
				vok+="$side FAILED "
				FAILS+=("parallel: $fmt verify through $side failed, see $W/par-verify.log")
			}
			par_stop
		done
		if [ $fmt = vdi ]; then
			if qemu-img check -f vdi "$src" >"$W/par-check.log" 2>&1; then
				vok+="; qemu-img check clean"
			else
				vok+="; qemu-img check FAILED"
				FAILS+=("parallel: qemu-img check of $src failed, see $W/par-check.log")
			fi
		fi
		PAR_ROWS+=("$fmt behind 2 ms nbdkit|$q1o|$q32o|$os|$q1p|$q32p|$ps|$vok")
		say "parallel: $fmt: ours $q1o -> $q32o IOPS (${os}x), qemu-nbd $q1p -> $q32p (${ps}x); verify: $vok"
		# run.sh's table: IOPS in the time columns, ratio peer/ours
		# (lower is better, as for the guest MB/s rows)
		ROWS+=("parallel $fmt 2ms-nbd QD1 randrw 4k IOPS|qemu-nbd|$q1o|$q1p|$(par_ratio "$q1p" "$q1o")|-|-|-")
		ROWS+=("parallel $fmt 2ms-nbd QD32x4 randrw 4k IOPS|qemu-nbd|$q32o|$q32p|$(par_ratio "$q32p" "$q32o")|-|-|-")
	done
	par_dyn_cases
	[ "$PAR_BASE" = 0 ] && { par_write_md "$load" 0 0 skipped; rm -f "$W/par.raw" "$W/par.vdi"; return; }
	read -r pco pcp <<<"$(par_measure "page-cache vdi QD32x4" vdi "$W/par.vdi" 4 32)"
	ROWS+=("parallel vdi page-cache QD32x4 randrw 4k IOPS|qemu-nbd|$pco|$pcp|$(par_ratio "$pcp" "$pco")|-|-|-")
	say "parallel: page-cache vdi QD32x4: ours $pco, qemu-nbd $pcp IOPS, ours/peer $(par_ratio "$pco" "$pcp")"
	if qemu-img check -f vdi "$W/par.vdi" >"$W/par-check.log" 2>&1; then st="clean"; else
		st="FAILED"
		FAILS+=("parallel: qemu-img check after the page-cache runs failed")
	fi
	par_write_md "$load" "$pco" "$pcp" "$st"
	rm -f "$W/par.raw" "$W/par.vdi"
}

par_write_md() {
	local r
	{
		echo "# Parallel requests behind a backend with latency ($(date -u +%Y-%m-%d\ %H:%M) UTC)"
		echo
		echo "- machine: $(nproc) cores, shared; load average at the start $1, at the end $(cut -d' ' -f1-3 /proc/loadavg)"
		echo "- $(nbdkit --version | head -n1) file plugin + delay filter (rdelay=wdelay=2ms) on a Unix socket; $(qemu-nbd --version | head -n1); $(fio --version)"
		echo "- imgtool serve --format FMT --shared 4 --threads $PAR_THREADS; qemu-nbd -f FMT --shared=4 --cache=writeback --aio=threads; both re-export the nbdkit URI"
		echo "- connections to nbdkit: imgtool's NBD backend opens 4 (nbdkit offers multi-conn), qemu-nbd 7.2's NBD client 1; nbdkit runs 16 threads per connection, so at most 64 and 16 requests wait on the 2 ms delay at once"
		echo "- image ${PAR_MB} MiB random data (VDI fully allocated); fio nbd engine, 4 KiB randrw 50/50, ${PAR_SECONDS} s time-based; QD1 = 1 job x iodepth 1, QD32x4 = 4 jobs (connections) x iodepth 32; $PAIRS interleaved pairs, medians; IOPS = reads + writes"
		echo "- verify: 4 jobs x 32 MiB randwrite at QD32, crc32c, read back (fio --verify=crc32c --do_verify=1) through each server; qemu-img check on the VDI file after the servers stopped"
		echo
		echo "| image | ours QD1 | ours QD32x4 | ours scaling | qemu-nbd QD1 | qemu-nbd QD32x4 | qemu-nbd scaling | verify |"
		echo "|---|---|---|---|---|---|---|---|"
		for r in "${PAR_ROWS[@]}"; do echo "| ${r//|/ | } |"; done
		if [ ${#PAR_DYN_ROWS[@]} -gt 0 ]; then
			echo
			echo "Dynamic formats, fully allocated, behind the same 2 ms nbdkit, QD32x4 (IOPS, medians of $PAIRS pairs; before = a build from before these formats took writes in parallel$([ -n "$PAR_BEFORE" ] || echo ', not measured this run'); the sides run one after the other in every pair, so the machine's load falls on all of them alike):"
			echo
			echo "| image | before | ours | qemu-nbd | ours/before | ours/qemu-nbd | verify, check |"
			echo "|---|---|---|---|---|---|---|"
			for r in "${PAR_DYN_ROWS[@]}"; do echo "| ${r//|/ | } |"; done
		fi
		[ "$4" = skipped ] && return
		echo
		echo "Page cache (local VDI file, no delay), QD32x4: ours $2 IOPS, qemu-nbd $3 IOPS, ours/peer $(par_ratio "$2" "$3"); qemu-img check afterwards: $4."
	} >"${PAR_OUT_MD:-$TOP/bench/results/parallel.md}"
}

# On its own: bash bench/parallel.sh
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -uo pipefail
	cd "$(dirname "$0")/.."
	TOP=$PWD
	B=${B:-build}
	IMGTOOL=$TOP/$B/bin/imgtool
	PAIRS=${BENCH_PAIRS:-2}
	W=${BENCH_DIR:-/tmp/imgbench}
	CASES=${BENCH_CASES:-}
	ROWS=()
	FAILS=()
	mkdir -p "$W" "$TOP/bench/results"
	say() { echo "bench: $*" >&2; }
	trap par_stop EXIT
	parallel_cases
	for r in "${ROWS[@]}"; do echo "$r"; done
	for r in "${FAILS[@]}"; do echo "FAIL: $r"; done
	[ ${#FAILS[@]} -eq 0 ]
fi
