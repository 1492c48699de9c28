# shellcheck shell=bash
# Sourced by bench/run.sh: images on storage backends against their peers.
#   - 1 GiB mixed and full images to and from Ceph RBD: imgtool convert
#     against qemu-img convert with QEMU's rbd driver, and against
#     rbd import / rbd export, on one single-node cluster started here
#     (tests/ceph/ceph-single-node.sh) and stopped at the end;
#   - an NBD source (qemu-nbd) to a local file: imgtool convert against
#     nbdcopy, and against nbdcopy --flush (imgtool's copy is on disk when
#     it returns; nbdcopy's only with --flush).

# True when BENCH_CASES selects one of the named cases (or selects all), so
# that a cluster is started only when a case will use it.
backend_any_selected() {
	local name pat pats
	read -ra pats <<<"$CASES"
	[ ${#pats[@]} -eq 0 ] && return 0
	for name in "$@"; do
		for pat in "${pats[@]}"; do
			# shellcheck disable=SC2053 # pat is a glob
			[[ $name == $pat ]] && return 0
		done
	done
	return 1
}

backend_cases() {
	local bytes=$((SIZE_MB * 1048576)) img cluster conf uri names=()
	if command -v qemu-nbd >/dev/null && command -v nbdcopy >/dev/null; then
		for img in mixed full; do
			backend_any_selected "nbd source $img -> raw file"{,' (vs nbdcopy --flush)'} || continue
			start_qemu_nbd raw "$W/$img.raw" -r
			uri="nbd+unix:///?socket=$NBD_SOCK"
			bench_case "nbd source $img -> raw file" $bytes "rm -f $W/out.*" \
				"$IMGTOOL convert -O raw '$uri' $W/out.raw" \
				"nbdcopy '$uri' $W/out.raw" "nbdcopy"
			bench_case "nbd source $img -> raw file (vs nbdcopy --flush)" $bytes "rm -f $W/out.*" \
				"$IMGTOOL convert -O raw '$uri' $W/out.raw" \
				"nbdcopy --flush '$uri' $W/out.raw" "nbdcopy --flush"
			stop_servers
		done
	else
		say "nbd backend: qemu-nbd or nbdcopy missing, skipped"
	fi

	for img in mixed full; do
		names+=("rbd convert $img raw -> rbd"{,' (vs rbd import)'})
		names+=("rbd convert $img rbd -> raw"{,' (vs rbd export)'})
	done
	backend_any_selected "${names[@]}" || return 0
	if ! command -v ceph-mon >/dev/null || ! command -v rbd >/dev/null; then
		say "rbd backend: Ceph packages missing, skipped"
		return
	fi
	cluster=$W/ceph
	rm -rf "$cluster"
	if ! CEPH_STORE_MB=$((SIZE_MB * 8 > 8192 ? SIZE_MB * 8 : 8192)) \
		"$TOP/tests/ceph/ceph-single-node.sh" start "$cluster" >/dev/null; then
		say "rbd backend: the cluster did not start, skipped"
		return
	fi
	conf=$cluster/ceph.conf
	local R="rbd:rbd/bench:conf=$conf" S="rbd:rbd/src"
	local rm_dst="rbd -c $conf rm bench >/dev/null 2>&1; rm -f $W/out.*"
	for img in mixed full; do
		bench_case "rbd convert $img raw -> rbd" $bytes "$rm_dst" \
			"$IMGTOOL convert -O raw $W/$img.raw $R" \
			"qemu-img convert -f raw -O raw $W/$img.raw $R" "qemu-img convert (rbd driver)"
		bench_case "rbd convert $img raw -> rbd (vs rbd import)" $bytes "$rm_dst" \
			"$IMGTOOL convert -O raw $W/$img.raw $R" \
			"rbd -c $conf import --no-progress $W/$img.raw bench" "rbd import"
		backend_any_selected "rbd convert $img rbd -> raw"{,' (vs rbd export)'} || continue
		rbd -c "$conf" rm src >/dev/null 2>&1
		"$IMGTOOL" convert -O raw "$W/$img.raw" "$S:conf=$conf" || continue
		bench_case "rbd convert $img rbd -> raw" $bytes "rm -f $W/out.*" \
			"$IMGTOOL convert -O raw $S:conf=$conf $W/out.raw" \
			"qemu-img convert -t writeback -f raw -O raw $S:conf=$conf $W/out.raw" "qemu-img convert -t writeback (rbd driver)"
		bench_case "rbd convert $img rbd -> raw (vs rbd export)" $bytes "rm -f $W/out.*" \
			"$IMGTOOL convert -O raw $S:conf=$conf $W/out.raw" \
			"rbd -c $conf export --no-progress src $W/out.raw" "rbd export"
	done
	"$TOP/tests/ceph/ceph-single-node.sh" stop "$cluster" 2>/dev/null
	rm -rf "$cluster"
}
