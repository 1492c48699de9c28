# Sourced by bench/run.sh: imgvm against qemu-system-x86_64 -enable-kvm on
# the same KVM: start to INSTALL-OK, and the guest's own sequential disk
# figures (bench.iso) and fio's 4 KiB random IOPS at queue depths 1 and 32
# (fiobench.iso, when the host has fio to put in it) on an AHCI disk backed
# by a dynamic VDI; case vmm-rbd: the fio guest on a Ceph RBD image
# against QEMU's rbd driver.  On hardware KVM this runs directly; elsewhere inside
# the nested test host (tests/nested-kvm.sh), which proves the comparison,
# not absolute speed.
vmm_cases() {
	local guest=$W/guest nested="" inner=$TOP/bench/vmm-inner.sh fio_iso="" with_fio=0 rbd_fio=0
	local pats base=0 rbd=0 pat
	read -ra pats <<<"$CASES"
	[ ${#pats[@]} -eq 0 ] && base=1 rbd=1
	for pat in "${pats[@]}"; do
		# shellcheck disable=SC2053 # pat is a glob
		[[ "vmm" == $pat ]] && base=1
		# shellcheck disable=SC2053
		[[ "vmm-rbd" == $pat ]] && rbd=1
	done
	[ $base = 1 ] || [ $rbd = 1 ] || return 0
	command -v qemu-system-x86_64 >/dev/null || { say "vmm: qemu-system-x86_64 missing, skipped"; return; }
	# fio comes from the host (make deps installs it) into a guest of
	# its own; without it, the VMM rows have no fio figures
	if command -v fio >/dev/null; then
		with_fio=1 fio_iso=$guest/fiobench.iso
	else
		say "vmm: fio missing, no guest fio rows"
	fi
	# the fio guest on Ceph RBD too, against QEMU's rbd driver
	# (qemu-block-extra), when both sides can reach a cluster
	if [ $rbd = 0 ]; then
		:
	elif [ $with_fio = 1 ] && command -v ceph-mon >/dev/null && command -v rbd >/dev/null &&
		[ -e /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so ]; then
		rbd_fio=1
	elif [ $with_fio = 1 ]; then
		say "vmm-rbd: Ceph or QEMU's rbd driver missing, no guest fio rows on RBD"
	fi
	[ $base = 1 ] || [ $rbd_fio = 1 ] || return 0
	if ! ISO_FIO=$with_fio "$TOP/tests/guest/build-test-iso.sh" "$guest" >"$W/guest-build.log" 2>&1; then
		say "vmm: building the test guest failed (log: $W/guest-build.log)"
		FAILS+=("vmm: guest build failed")
		return
	fi
	local where="hardware KVM"
	if [ -e /sys/module/kvm_pvm ] || ! [ -w /dev/kvm ] ||
		! grep -qE 'vmx|svm' /proc/cpuinfo; then
		where="the nested test host (QEMU TCG L1 with kvm_amd)"
		# the two fio guests take about 5 minutes of each pair there,
		# the two on RBD as long again, and the cluster 3 minutes to start.
		# One CPU in L1, as in tests/e2e/vmm.sh: with two, L1's kernel
		# panicked in two of the runs here (docs/vmmtest.md)
		nested="env NK_SMP=${NK_SMP:-1} NK_LOCKUP=${NK_LOCKUP:-100} NK_SILENCE=${NK_SILENCE:-100}
			NK_CONSOLE_LOG=$W/l1-console.log $TOP/tests/nested-kvm.sh -t 7200 -w $W -w $TOP --"
	fi
	say "vmm: imgvm vs QEMU+KVM on $where, $PAIRS pairs$([ $rbd_fio = 1 ] && echo ", fio on RBD too")"
	$nested env PAIRS="$PAIRS" IMGVM="$IMGVM" GUEST="$guest" OUT="$W/vmm-rows" FIO_ISO="$fio_iso" BASE=$base RBD_FIO=$rbd_fio \
		bash "$inner" >"$W/vmm.log" 2>&1
	local st=$?
	if [ $st = 123 ] || [ $st = 125 ]; then
		# the nested host itself hung or its kernel died (QEMU TCG's
		# emulated SVM; one L1 panicked with "corrupted stack end
		# detected inside scheduler" after 7 minutes): once more
		say "vmm: $(grep -a -E 'L1 (hung|failed)' "$W/vmm.log" | tail -1); starting it once more"
		mv "$W/vmm.log" "$W/vmm.1.log"
		$nested env PAIRS="$PAIRS" IMGVM="$IMGVM" GUEST="$guest" OUT="$W/vmm-rows" FIO_ISO="$fio_iso" BASE=$base RBD_FIO=$rbd_fio \
			bash "$inner" >"$W/vmm.log" 2>&1
		st=$?
	fi
	if [ $st != 0 ] || [ ! -s "$W/vmm-rows" ]; then
		say "vmm: failed (exit $st); tail of $W/vmm.log:"
		tail -n 15 "$W/vmm.log" >&2
		FAILS+=("vmm: inner run failed (exit $st), see $W/vmm.log")
		return
	fi
	local row
	while IFS= read -r row; do
		ROWS+=("$row")
		IFS='|' read -r n p o q r t a b <<<"$row"
		printf '%-34s %-22s ours %7s   peer %7s   ratio %5s  %s  RSS %s/%s MiB\n' "$n" "$p" "$o" "$q" "$r" "$t" "$a" "$b"
	done <"$W/vmm-rows"
	VMM_WHERE=$where
	VMM_FIO=$with_fio
	VMM_RBD=$rbd_fio
}
