#!/bin/bash
# bench/install.sh: the time of an unattended Debian 12 install (start to
# DEBIAN-BOOT-OK from the installed disk) under imgvm against QEMU + KVM
# with the same installer CD, mirror, guest size (2 vCPUs, 2 GiB) and image
# format (FMT, default vdi).  tests/install/debian.sh does the runs; here
# they go one after the other in one nested test host (where /dev/kvm
# cannot run firmware), imgvm first unless ORDER="qemu imgvm".
# Prints the phases of each and the ratio imgvm / QEMU (lower is better).
# Env: FMT, ORDER, INSTALL_WORK, INSTALL_TIMEOUT, NK_MEM, NK_LOCK.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FMT=${FMT:-vdi}
ORDER=${ORDER:-imgvm qemu}
WORK=${INSTALL_WORK:-/tmp/imgvm-debinst}
TMO=${INSTALL_TIMEOUT:-5400}
export INSTALL_WORK=$WORK B=${B:-build}

if [ "${1:-}" = --inner ]; then
	# CONVERTED=1: also the converted-VMDK boots after imgvm's install
	for vmm in $ORDER; do
		conv=0
		[ "$vmm" = imgvm ] && conv=${CONVERTED:-0}
		INSTALL_VMM=$vmm FMTS=$FMT CONVERTED=$conv bash "$ROOT/tests/install/debian.sh" --inner
	done
	exit 0
fi

bash "$ROOT/tests/install/debian.sh" --prepare | grep -v '^0 passed' || exit 1
echo "# host load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
if [ -e /sys/module/kvm_pvm ] || ! [ -w /dev/kvm ] || ! grep -qE 'vmx|svm' /proc/cpuinfo; then
	NK_MEM=${NK_MEM:-5120} nice -n 10 "$ROOT/tests/nested-kvm.sh" -w "$WORK" -w "$ROOT" \
		-t $((2 * TMO + 600)) -- env FMT="$FMT" ORDER="$ORDER" CONVERTED="${CONVERTED:-0}" \
		bash "$ROOT/bench/install.sh" --inner
else
	bash "$ROOT/bench/install.sh" --inner
fi
st=$?
echo "# host load after: $(cut -d' ' -f1-3 /proc/loadavg)"
imgvm=$(awk -v f="$FMT" '$1 == f { print $3 }' "$WORK/results-imgvm" 2>/dev/null)
qemu=$(awk -v f="$FMT" '$1 == f { print $3 }' "$WORK/results-qemu" 2>/dev/null)
if [ -n "$imgvm" ] && [ -n "$qemu" ]; then
	printf 'Debian install %s, start to DEBIAN-BOOT-OK: imgvm %s s, QEMU %s s, ratio %s\n' \
		"$FMT" "$imgvm" "$qemu" "$(awk "BEGIN { printf \"%.2f\", $imgvm / $qemu }")"
else
	echo "bench/install.sh: no pair of results (exit $st; imgvm '${imgvm}', QEMU '${qemu}')" >&2
	exit 1
fi
