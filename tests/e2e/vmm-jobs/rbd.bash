# shellcheck shell=bash
# Guest case of the storage backends (sourced by tests/e2e/vmm.sh): the
# installed test disk, converted to a VDI on a Ceph RBD image, boots with
# imgvm --disk rbd:...; the cluster (one monitor, one memstore OSD) lives
# in the nested host's memory.  The guest's write is read back from the
# cluster with Ceph's own rbd export.
#
# Only with VMM_E2E_FULL=1 inside the nested test host: L1 once ended
# during this job (the guest at SYSLINUX's kernel load), and the job takes
# over three minutes there, most of it starting the cluster under TCG.
# Its memory is not what ended L1 (measured: L1 kept 3.4 of its 4 GiB
# available; rbd-mem.log, docs/vmmtest.md).  On hardware KVM it always
# runs.  RBD itself is tested on the host by tests/e2e/ceph.sh.

# (sourced by vmm.sh: "$1" is vmm.sh's, --inside in the nested host)
if [ -n "$FULL" ] || [ "${1:-}" != --inside ]; then
	VMM_EXTRA_JOBS+=("rbd")
fi

job_rbd() {
	local dir conf img log=$T/rbd-boot.log rc=1 want got sampler
	if [ ! -e "$PREP/ready" ] || [ ! -e "$PREP/installed.vdi" ]; then
		echo "skip - boot from RBD: $(cat "$PREP/why" 2>/dev/null)"
		return 0
	fi
	if ! command -v ceph-mon >/dev/null || ! command -v rbd >/dev/null; then
		echo "skip - boot from RBD: Ceph packages missing (scripts/deps.sh installs them)"
		return 0
	fi
	# tmpfs and 9p have no O_DIRECT for bluestore: memstore
	dir=$(mktemp -d /dev/shm/rbd-job.XXXXXX)
	if ! CEPH_OBJECTSTORE=memstore CEPH_STORE_MB=1024 \
		"$ROOT/tests/ceph/ceph-single-node.sh" start "$dir/ceph" >"$T/rbd-ceph.out" 2>"$T/rbd-ceph.err"; then
		fail "boot from RBD: the Ceph cluster did not start: $(tail -1 "$T/rbd-ceph.err")"
		rm -rf "$dir"
		return 1
	fi
	conf=$dir/ceph/ceph.conf
	img="rbd:rbd/installed:conf=$conf"
	# What the cluster and the guest take from the host's memory, every
	# 2 s, into the kept logs: if the host ends mid-job, its last lines
	# say whether memory ran out.
	rbd_job_memory "$dir/ceph" >"$T/rbd-mem.log" 2>&1 &
	sampler=$!
	if ! "$IMGTOOL" convert -O vdi "$PREP/installed.vdi" "$img" 2>"$T/rbd-convert.err"; then
		fail "boot from RBD: convert onto RBD: $(cat "$T/rbd-convert.err")"
	else
		run_vm "$log" --disk "$img" --no-reboot
		if [ "$RC" = 0 ] && grep -qa MARKER-OK "$log" && grep -qa WRITE-OK "$log"; then
			ok "imgvm --disk rbd:rbd/installed (a VDI on RBD) -> MARKER-OK, WRITE-OK, exit 0"
			want=$(. "$GUEST/guest.env" && echo "$WRITE_SHA256")
			rbd -c "$conf" export installed "$T/rbd-back.vdi" >/dev/null 2>&1
			"$IMGTOOL" convert -O raw "$T/rbd-back.vdi" "$T/rbd-back.raw" 2>/dev/null
			got=$(MTOOLS_SKIP_CHECK=1 mtype -i "$T/rbd-back.raw@@1M" ::guestw.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
			if [ -n "$want" ] && [ "$got" = "$want" ]; then
				ok "the guest's write is on the RBD image (rbd export, sha256 $got)"
				rc=0
			else
				fail "the guest's write on RBD: sha256 $got, wanted $want"
			fi
			rm -f "$T/rbd-back.vdi" "$T/rbd-back.raw"
		else
			fail "boot from RBD (rc=$RC): $(tail_log "$log")"
		fi
	fi
	kill "$sampler" 2>/dev/null
	"$ROOT/tests/ceph/ceph-single-node.sh" stop "$dir/ceph" 2>/dev/null
	rm -rf "$dir"
	return $rc
}

# rbd_job_memory CLUSTER_DIR: one line every 2 s: the host's available
# memory and shared memory (tmpfs), the RSS of the monitor, the OSD and
# imgvm, in MiB.
rbd_job_memory() {
	local n pid line
	while :; do
		line="$(date +%T) $(awk '/^(MemAvailable|Shmem):/ { printf "%s %d ", $1, $2 / 1024 }' /proc/meminfo)"
		for n in mon.a osd.0; do
			pid=$(cat "$1/run/$n.pid" 2>/dev/null) &&
				line="$line $n $(awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$pid/status" 2>/dev/null)"
		done
		for pid in $(pgrep -x imgvm); do
			line="$line imgvm $(awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$pid/status" 2>/dev/null)"
		done
		echo "$line"
		sleep 2
	done
}
