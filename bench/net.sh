# Sourced by bench/run.sh: TCP throughput over user-mode networking,
# imgvm's virtio-net + libslirp against QEMU's -nic
# user,model=virtio-net-pci on the same KVM (bench/net-inner.sh).  On
# hardware KVM directly, elsewhere inside the nested test host, which
# proves the comparison, not absolute speed.
net_cases() {
	local guest=$W/guest nested="" inner=$TOP/bench/net-inner.sh
	local pats match=0 pat st row
	read -ra pats <<<"$CASES"
	[ ${#pats[@]} -eq 0 ] && match=1
	for pat in "${pats[@]}"; do [[ "net" == $pat ]] && match=1; done
	[ $match = 1 ] || return 0
	command -v qemu-system-x86_64 >/dev/null || { say "net: qemu-system-x86_64 missing, skipped"; return; }
	command -v socat >/dev/null || { say "net: socat missing, skipped"; return; }
	if ! "$TOP/tests/guest/build-test-iso.sh" "$guest" >"$W/guest-build.log" 2>&1; then
		say "net: building the test guest failed (log: $W/guest-build.log)"
		FAILS+=("net: guest build failed")
		return
	fi
	if [ -e /sys/module/kvm_pvm ] || ! [ -w /dev/kvm ] ||
		! grep -qE 'vmx|svm' /proc/cpuinfo; then
		nested="$TOP/tests/nested-kvm.sh -t 1800 -w $W -w $TOP --"
	fi
	say "net: imgvm vs QEMU over slirp, $PAIRS pairs"
	$nested env PAIRS="$PAIRS" IMGVM="$IMGVM" GUEST="$guest" OUT="$W/net-rows" \
		bash "$inner" >"$W/net.log" 2>&1
	st=$?
	if [ $st != 0 ] || [ ! -s "$W/net-rows" ]; then
		say "net: failed (exit $st); tail of $W/net.log:"
		tail -n 15 "$W/net.log" >&2
		FAILS+=("net: inner run failed (exit $st), see $W/net.log")
		return
	fi
	while IFS= read -r row; do
		ROWS+=("$row")
		IFS='|' read -r n p o q r t a b <<<"$row"
		printf '%-34s %-22s ours %7s   peer %7s   ratio %5s  %s\n' "$n" "$p" "$o" "$q" "$r" "$t"
	done <"$W/net-rows"
}
