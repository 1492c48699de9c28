#!/bin/bash
# nested-kvm.sh [-w DIR]... [-t SECONDS] [--] COMMAND [ARGS...]
#
# Runs COMMAND where /dev/kvm is a real Linux KVM, on a host that has none
# usable for firmware (no VMX/SVM, or kvm_pvm): an L1 Linux guest runs under
# QEMU TCG with an emulated AMD CPU that has SVM and nested paging, and
# loads Debian's kvm + kvm_amd.  Inside L1:
#   - the host's / is shared read-only over 9p, under a tmpfs overlay
#     (writes elsewhere than the work dirs are dropped when L1 ends);
#   - every -w DIR (default: the current directory) is shared writable at
#     the same path; /tmp, /run and /dev/shm are fresh tmpfs, mounted first,
#     so a work dir under /tmp works;
#   - COMMAND runs as root under bash, in the current directory with the
#     exported environment, stdin /dev/null, loopback network only.
# Its stdout and stderr are streamed back (polled, so their relative order
# is not kept) and its exit status is this script's.  124: timeout (-t,
# NK_TIMEOUT, default 1800 s for the whole run); 125: L1 itself failed (its
# console tail is printed); 123: L1 hung: its kernel reported a CPU in soft
# lockup for NK_LOCKUP seconds or more (default 45), its heartbeat stopped
# for NK_SILENCE seconds (default NK_STALL + 30), or its watchdog saw a CPU
# take no interrupt for NK_STALL seconds (default 30; it takes a second
# CPU to see one) or a task outlive SIGKILL by 30 s (a vCPU
# of L1 that entered an L2 guest and never came back: seen now and then
# with QEMU TCG's emulated SVM, at an L2 guest's start).  L1 is stopped
# then instead of at the timeout, and the caller may start it again.  An
# L1 CPU that stands still, halted or in its guest, while an interrupt
# waits for it (a wake-up QEMU 7.2 lost, docs/vmmtest.md) is woken 6-7 s
# into the silence by a key press, and L1 goes on; the host's stderr says
# so.
#
# Env: NESTED_KVM_CACHE (default /tmp/imgvm-nested-kvm) unpacked kernel, initramfs
#      IMGVM_DEB_CACHE (default ~/.cache/imgvm/debs) downloaded .debs
#      NK_MEM=4096 (MiB)  NK_SMP (default: host CPUs, at most 4)
#      NK_CPU=EPYC,+svm,+npt   NK_AMD_PARAMS="npt=0 ..." (kvm_amd options)
#      NK_ACCEL=tcg,thread=multi (QEMU's -accel for L1)
#      NK_STALL=30: L1's watchdog calls a CPU stuck after this many seconds
#      NK_LOCKUP=45, NK_SILENCE=NK_STALL+30: the host's limits (above)
#      NK_SILENT=60: it kills an imgvm boot that wrote nothing for this long
#      NK_CONSOLE=1 streams L1's console to stderr   KPKG=linux-image-...
#      NK_CONSOLE_LOG=FILE keeps L1's console there when L1 ends
#      NK_HANG_LOG=FILE gets, when L1 hangs, what QEMU was doing: its
#      monitor's view of L1's CPU and local APIC, the interrupt state QEMU
#      keeps for the CPU (tests/qemu-x86-flags.py), and each of its
#      threads' state, kernel stack and (with gdb) user stack
#      NK_STARTED_FILE=FILE gets the time L1 starts (after the lock)
#      NK_LOCK (default /tmp/imgvm-nested-kvm.lock): one nested host at a
#      time on this machine (two TCG hosts on two cores starve each other's
#      vCPUs into soft lockups); a second start waits for the first to end
# Debian packages only: qemu-system-x86, linux-image-*-amd64 and
# busybox-static (downloaded and unpacked, not installed), kmod, cpio.
set -uo pipefail
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
workdirs=()
limit=${NK_TIMEOUT:-1800}
while [ $# -gt 0 ]; do
	case $1 in
	-w)
		d=$(cd "${2:?-w needs a directory}" && pwd) || exit 2
		workdirs+=("$d")
		shift 2
		;;
	-t)
		limit=${2:?-t needs seconds}
		shift 2
		;;
	-h | --help)
		sed -n '2,/^set -uo/p' "$self" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	--)
		shift
		break
		;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || { echo "usage: nested-kvm.sh [-w DIR]... [-t SECONDS] [--] COMMAND [ARGS...]" >&2; exit 2; }
[ ${#workdirs[@]} -gt 0 ] || workdirs=("$PWD")
log() { echo "nested-kvm: $*" >&2; }

for tool in qemu-system-x86_64:qemu-system-x86 cpio:cpio modprobe:kmod dpkg-deb:dpkg; do
	command -v "${tool%%:*}" >/dev/null 2>&1 || { log "needs ${tool#*:} (make deps)"; exit 125; }
done
cache=${NESTED_KVM_CACHE:-/tmp/imgvm-nested-kvm}
mkdir -p "$cache" && cache=$(cd "$cache" && pwd) || exit 125

# ---- L1 kernel and busybox (cached .debs from the test guest are reused) --
debs=${IMGVM_DEB_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/imgvm/debs}
mkdir -p "$debs" 2>/dev/null && [ -w "$debs" ] || debs=$cache
deb_dirs=("$debs" "$cache" "${IMGVM_GUEST_CACHE:-/nonexistent}" /tmp/nested-kvm-cache /tmp/imgvm-guest/.cache)
find_deb() {
	local d f
	for d in "${deb_dirs[@]}"; do
		for f in "$d/$1"_*.deb; do
			[ -e "$f" ] && { echo "$f"; return 0; }
		done
	done
	return 1
}
unpack() {
	local pkg=$1 tree=$cache/tree-$1 deb
	if [ ! -e "$tree/.done" ]; then
		deb=$(find_deb "$pkg") || {
			log "apt-get download $pkg"
			(cd "$debs" && apt-get download -q "$pkg" >/dev/null 2>&1) || return 1
			deb=$(find_deb "$pkg") || return 1
		}
		# keep a copy where the nested test host can see it
		[ "$(dirname "$deb")" = "$debs" ] || cp "$deb" "$debs/" 2>/dev/null || true
		rm -rf "$tree" && mkdir -p "$tree" && dpkg-deb -x "$deb" "$tree" || return 1
		touch "$tree/.done"
	fi
	echo "$tree"
}
[ -n "${KPKG:-}" ] || KPKG=$(cat "$cache/kernel-package" 2>/dev/null || true)
[ -n "${KPKG:-}" ] || KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "${KPKG:-}" ] || { log "no kernel package known (apt-get update?)"; exit 125; }
ktree=$(unpack "$KPKG") || { log "cannot get $KPKG"; exit 125; }
btree=$(unpack busybox-static) || { log "cannot get busybox-static"; exit 125; }
echo "$KPKG" >"$cache/kernel-package"
kver=$(ls "$ktree/lib/modules" | head -n1)

# ---- L1's /init ------------------------------------------------------------
read -r -d '' l1_init <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "L1: $*"; echo "$*" >/ctl/l1-error 2>/dev/null; poweroff -f; }
amd_params=$(sed -n 's/.*nk_amd=\([^ ]*\).*/\1/p' /proc/cmdline | tr ',' ' ')
while read -r ko; do
	params=""
	case $ko in */kvm-amd.ko) params=$amd_params ;; esac
	insmod "$ko" $params 2>/dev/null
done </modules.list
mkdir -p /ctl /host /upper /root2
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $opts ctl /ctl || { echo "L1: no control share"; poweroff -f; }
[ -c /dev/kvm ] || fail "no /dev/kvm: $(dmesg | grep -iE 'kvm|svm' | tail -n 3 | tr '\n' ' ')"
mount -t 9p -o $opts,ro hostroot /host || fail "cannot mount the host root"
mount -t tmpfs -o mode=755 tmpfs /upper
mkdir -p /upper/data /upper/work
R=/root2
mount -t overlay -o lowerdir=/host,upperdir=/upper/data,workdir=/upper/work overlay $R ||
	fail "overlay mount failed"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs tmpfs $R/run
while read -r tag dir; do
	mkdir -p "$R$dir"
	mount -t 9p -o $opts "$tag" "$R$dir" || fail "cannot mount work dir $dir"
done </ctl/workdirs
mkdir -p $R/run/nested-kvm
mount --bind /ctl $R/run/nested-kvm
ip link set lo up 2>/dev/null
hostname nested-kvm
# The stuck-CPU watchdog.  A vCPU of L1 that entered an L2 guest and never
# comes back (QEMU TCG's emulated SVM) takes no interrupt: its tick and
# idle counters in /proc/stat stop, and the task on it cannot be killed.
# A CPU whose counters stood still for nk_stall seconds (default 30), or a
# task alive 30 s after SIGKILL (the watchdog kills an imgvm boot that
# wrote nothing in nk_silent seconds, default 60, to find out), is
# reported on the console as
# "nested-kvm-hung: ..." with the VMM threads' state, which the host
# watches for: it stops L1 at once.  Shorter stops of a CPU (5 s or more)
# are reported as "nested-kvm-stall: ...", for the record.  Its heartbeat,
# /ctl/alive, tells the host that L1 as a whole still runs.
stall=$(sed -n 's/.*nk_stall=\([0-9]*\).*/\1/p' /proc/cmdline)
silent=$(sed -n 's/.*nk_silent=\([0-9]*\).*/\1/p' /proc/cmdline)
awk -v limit="${stall:-30}" -v klimit=30 -v silent="${silent:-60}" '
function slurp(f,   l, s) {
	s = ""
	while ((getline l < f) > 0) s = s l "\n"
	close(f)
	return s
}
function field(s, name,   a) {
	s = "\n" s
	if (match(s, "\n" name ":[ \t]*[^\n]*") == 0) return ""
	a = substr(s, RSTART + 1, RLENGTH - 1)
	sub("^[^:]*:[ \t]*", "", a)
	return a
}
# killed(HEX): SIGKILL (bit 8) in a pending mask
function killed(m) { return index("13579bdf", substr(m, length(m) - 2, 1)) > 0 }
function kmsg(line) { printf "<0>%s\n", line > "/dev/kmsg"; close("/dev/kmsg") }
# the threads of the VMMs (imgvm, QEMU as L2 VMM): state, CPU, wchan
function vmm_threads(   p, t, st, out, n, f) {
	out = ""
	# "ls /proc/", not "ls /proc": a command string names one pipe, and the
	# main loop may be reading that one
	while (("ls /proc/" | getline p) > 0) {
		if (p !~ /^[0-9]+$/) continue
		n = slurp("/proc/" p "/comm")
		if (n !~ /^(imgvm|qemu-system)/) continue
		while (("ls /proc/" p "/task 2>/dev/null" | getline t) > 0) {
			st = slurp("/proc/" p "/task/" t "/stat")
			sub(/^.*\) /, "", st)
			split(st, f, " ")
			out = out sprintf(" [%s/%s %s cpu%s %s]", p, t, f[1], f[37], slurp("/proc/" p "/task/" t "/wchan"))
		}
		close("ls /proc/" p "/task 2>/dev/null")
	}
	close("ls /proc/")
	gsub(/\n/, "", out)
	return out
}
# silent_boot(PID): an imgvm boot that has written nothing (no console
# or firmware output, no disk write) for nk_silent seconds since its start,
# where SeaBIOS prints its banner within seconds
function silent_boot(p,   io, a, c, st, cmd) {
	io = slurp("/proc/" p "/io")
	if (io == "" || field(io, "wchar") != "0") return 0
	st = slurp("/proc/" p "/stat")
	sub(/^.*\) /, "", st)
	split(st, a, " ")
	if (uptime - a[20] / 100 < silent) return 0
	c = "tr \"\\0\" \" \" </proc/" p "/cmdline"
	c | getline cmd
	close(c)
	return cmd ~ /^[^ ]*imgvm boot /
}
BEGIN {
	for (;;) {
		now = systime()
		split(slurp("/proc/uptime"), up, " ")
		uptime = up[1]
		while ((getline l < "/proc/stat") > 0) {
			if (l !~ /^cpu[0-9]/) continue
			split(l, f, " ")
			s = 0
			for (i = 2; i <= 11; i++) s += f[i]
			c = f[1]
			if (!(c in last) || s != last[c]) {
				if ((c in since) && now - since[c] >= 5)
					kmsg("nested-kvm-stall: " c " took no interrupt for " now - since[c] " s, then went on")
				last[c] = s
				since[c] = now
			} else if (now - since[c] >= limit) {
				kmsg("nested-kvm-hung: " c " took no interrupt for " now - since[c] " s; VMM threads:" vmm_threads())
				exit
			}
		}
		close("/proc/stat")
		while (("ls /proc" | getline p) > 0) {
			if (p !~ /^[0-9]+$/) continue
			st = slurp("/proc/" p "/status")
			if (st == "" || field(st, "State") ~ /^[ZX]/) { delete kt[p]; continue }
			if (field(st, "Name") == "imgvm" && !(p in silenced) && silent_boot(p)) {
				kmsg("nested-kvm-stall: imgvm boot (pid " p ") wrote nothing in " silent " s: killed")
				system("kill -KILL " p)
				silenced[p] = 1
			}
			if (!killed(field(st, "ShdPnd")) && !killed(field(st, "SigPnd"))) { delete kt[p]; continue }
			if (!(p in kt)) kt[p] = now
			else if (now - kt[p] >= klimit) {
				kmsg("nested-kvm-hung: " field(st, "Name") " (pid " p ", " field(st, "State") ") alive " now - kt[p] " s after SIGKILL; VMM threads:" vmm_threads())
				exit
			}
		}
		close("ls /proc")
		# the heartbeat the host watches: L1 as a whole stuck stops it
		printf "%d\n", now > "/ctl/alive"
		close("/ctl/alive")
		system("sleep 2")
	}
}' </dev/null >/dev/null 2>&1 &
chroot $R /bin/bash /run/nested-kvm/command.sh >/ctl/stdout 2>/ctl/stderr </dev/null
echo $? >/ctl/status.new
mv /ctl/status.new /ctl/status
sync
poweroff -f
EOF

# One initramfs per version of /init and kernel, each built in its own
# folder and moved into place whole: checkouts of different versions on
# one machine share the cache without rebuilding each other's.
stamp=$(printf '%s' "$l1_init" | sha256sum | cut -c1-16)-$KPKG
initrd=$cache/l1-initrd-$stamp.gz
if [ ! -e "$initrd" ]; then
	log "building the L1 initramfs ($KPKG)"
	[ -e "$ktree/lib/modules/$kver/modules.dep" ] || depmod -b "$ktree" "$kver"
	w=$(mktemp -d "$cache/l1-root.XXXXXX") || exit 125
	mkdir -p "$w"/{bin,proc,sys,dev}
	cp "$btree/bin/busybox" "$w/bin/"
	printf '%s\n' "$l1_init" >"$w/init"
	chmod 755 "$w/init"
	: >"$w/modules.list"
	for m in virtio_pci 9pnet_virtio 9p overlay kvm-amd; do
		modprobe -d "$ktree" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }' |
			while read -r f; do
				rel=/lib/modules/${f#"$ktree/lib/modules/$kver/"}
				grep -qxF "$rel" "$w/modules.list" && continue
				mkdir -p "$w$(dirname "$rel")"
				cp "$f" "$w$rel"
				echo "$rel" >>"$w/modules.list"
			done
	done
	(cd "$w" && find . | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$w.gz" && mv "$w.gz" "$initrd"
	rm -rf "$w"
fi

# ---- this run --------------------------------------------------------------
ctl=$(mktemp -d /tmp/nested-kvm-run.XXXXXX) || exit 125
qemu_pid=""
tails=()
finish() {
	[ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
	for t in "${tails[@]}"; do kill "$t" 2>/dev/null; done
	[ -n "${NK_CONSOLE_LOG:-}" ] && [ -e "$ctl/console.log" ] &&
		tr -d '\r' <"$ctl/console.log" >"$NK_CONSOLE_LOG" 2>/dev/null
	rm -rf "$ctl"
}
trap finish EXIT
trap 'exit 130' INT TERM
: >"$ctl/stdout"
: >"$ctl/stderr"
: >"$ctl/workdirs"
shares=()
n=0
for d in "${workdirs[@]}"; do
	echo "work$n $d" >>"$ctl/workdirs"
	shares+=(-virtfs "local,path=$d,mount_tag=work$n,security_model=none")
	n=$((n + 1))
done
{
	export -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|_|HOSTNAME)='
	printf 'cd %q || exit 126\n' "$PWD"
	printf 'exec'
	printf ' %q' "$@"
	printf '\n'
} >"$ctl/command.sh"

exec {lock_fd}>"${NK_LOCK:-/tmp/imgvm-nested-kvm.lock}"
if ! flock -n "$lock_fd"; then
	log "waiting for another nested test host on this machine to end"
	# in the background, so that a TERM while waiting ends the wait
	flock "$lock_fd" &
	wait $! || exit 125
fi
# the caller's watchdogs count from here, not from the wait
[ -n "${NK_STARTED_FILE:-}" ] && date +%s >"$NK_STARTED_FILE"
smp=${NK_SMP:-$(nproc)}
[ "$smp" -gt 4 ] && smp=4
amd=$(echo "${NK_AMD_PARAMS:-}" | tr ' ' ',')
stall=${NK_STALL:-30}
lockup=${NK_LOCKUP:-45}
silence=${NK_SILENCE:-$((stall + 30))}
started=$(date +%s.%N)
timeout -k 5 "$limit" qemu-system-x86_64 -accel "${NK_ACCEL:-tcg,thread=multi}" -cpu "${NK_CPU:-EPYC,+svm,+npt}" \
	-smp "$smp" -m "${NK_MEM:-4096}" -M q35 -display none -vga none -nic none -no-reboot \
	-monitor "unix:$ctl/monitor,server,nowait" -serial "file:$ctl/console.log" -name nested-kvm,debug-threads=on \
	-kernel "$ktree/boot/vmlinuz-$kver" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 quiet loglevel=3 nk_amd=$amd nk_stall=$stall nk_silent=${NK_SILENT:-60}" \
	-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
	-virtfs "local,path=$ctl,mount_tag=ctl,security_model=none" \
	"${shares[@]}" </dev/null >"$ctl/qemu.log" 2>&1 &
qemu_pid=$!
tail -q -s 0.2 -c +1 -f --pid=$qemu_pid "$ctl/stdout" &
tails+=($!)
# qemu_threads PID: what QEMU's threads did over 2 s, for a hang's report:
# each thread's name, state and CPU seconds used (vCPU threads at 2.0 spin
# in L1's emulated CPUs; all at 0 is QEMU itself or every L1 CPU halted)
qemu_threads() {
	local d s f out="" hz
	local -A before=()
	hz=$(getconf CLK_TCK)
	# fields after the name, which may hold spaces ("CPU 0/TCG"):
	# f[0] the state, f[11] utime, f[12] stime
	for d in /proc/"$1"/task/*; do
		s=$(cat "$d/stat" 2>/dev/null) || continue
		read -ra f <<<"${s##*) }"
		before[$d]=$((f[11] + f[12]))
	done
	sleep 2
	for d in /proc/"$1"/task/*; do
		s=$(cat "$d/stat" 2>/dev/null) || continue
		read -ra f <<<"${s##*) }"
		s=$((f[11] + f[12] - ${before[$d]:-0}))
		[ "$s" -gt 0 ] || [[ $(cat "$d/comm" 2>/dev/null) == CPU* ]] || continue
		out="$out $(cat "$d/comm" 2>/dev/null) ${f[0]} $(awk -v t="$s" -v h="$hz" 'BEGIN { printf "%.2f", t / h }') s;"
	done
	echo "QEMU's threads over 2 s (name, state, CPU):${out:- none ran}"
}

# hang_report PID: what L1's QEMU is doing, into NK_HANG_LOG.  The
# monitor answers from QEMU's main loop, so its silence says that loop is
# blocked; a halted L1 CPU shows in "info registers" (HLT=1), the
# interrupts its local APIC holds for it in "info lapic" (IRR); the stacks
# say where each thread waits.
hang_report() {
	local pid=$1 d s
	[ -n "${NK_HANG_LOG:-}" ] && [ -n "$pid" ] || return 0
	{
		echo "# L1's QEMU (pid $pid) at $(date -u +%T), L1 up $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }') s"
		echo "# monitor: info cpus, info registers, info lapic, info pic"
		[ -z "$lost_seen" ] || echo "# a key press did not wake L1's CPU in 10 s; before it: $lost_seen"
		if monitor stop 'info cpus' 'info registers' 'info lapic' 'info pic' >"$ctl/hang-monitor"; then
			cat "$ctl/hang-monitor"
			echo "# QEMU's own state of the CPU: $(qemu_cpu_state "$pid" "$ctl/hang-monitor")"
		else
			echo "(no answer in 10 s: QEMU's main loop is blocked)"
		fi
		for d in /proc/"$pid"/task/*; do
			# (the state follows the name, which may hold spaces)
			s=$(cat "$d/stat" 2>/dev/null)
			s=${s##*) }
			echo "# thread $(basename "$d") $(cat "$d/comm" 2>/dev/null): state ${s%% *}, wchan $(cat "$d/wchan" 2>/dev/null)"
			cat "$d/stack" 2>/dev/null
		done
		if command -v gdb >/dev/null; then
			echo "# gdb: thread apply all bt"
			timeout 60 gdb -p "$pid" -batch -nx -ex 'thread apply all bt' 2>&1 | grep -avE '^(\[New LWP|warning:)'
		else
			echo "# gdb not installed: no user stacks"
		fi
	} >"$NK_HANG_LOG" 2>&1
}

# qemu_cpu_state PID FILE: QEMU's own interrupt state of L1's CPU, from
# the monitor's "info cpus" and "info registers" in FILE, on one line
qemu_cpu_state() {
	python3 "$(dirname "$self")/qemu-x86-flags.py" "$1" "$2" 2>&1 | head -n1
}

# monitor COMMAND...: the monitor's answers (none when QEMU's main loop is
# blocked)
monitor() {
	printf '%s\n' "$@" | timeout 10 socat -t 5 - "UNIX-CONNECT:$ctl/monitor" 2>/dev/null |
		tr -d '\r' | grep -av '^(qemu)'
}

# lapic_irr: the vectors in L1's local APIC's IRR, as the monitor lists
# them ("(none)" when empty)
lapic_irr() {
	monitor 'info lapic' | sed -n 's/^IRR[[:space:]]*//p' | head -n1 | tr -s ' ' | sed 's/ *$//'
}

# wake_lost: L1's one CPU stopped for good while its local APIC holds an
# interrupt for it (the timer's, vector 236), so that L1's clock stops and
# nothing in L1 can help.  QEMU 7.2's TCG loses the request that tells the
# CPU to look at its local APIC: its emulated VMRUN sets a bit of the same
# word without QEMU's lock (docs/vmmtest.md).  A halted CPU then sleeps
# for good; one running its L2 guest runs on without the exit the
# interrupt would cause, until it halts or the guest waits on L1.  Any new
# interrupt makes QEMU ask the APIC again, and one key press on L1's PS/2
# keyboard is one.  A healthy CPU takes such a vector within microseconds,
# so a vector seen twice, a second apart, after 6 s of silence is the lost
# request; what QEMU held for the CPU goes to lost_seen, for the log and
# the hang report, and the heartbeat is awaited for 10 s.
wake_lost() {
	local t qpid seen irr
	irr=$(lapic_irr)
	[[ $irr == [0-9]* ]] || return 1
	sleep 1
	[ "$(lapic_irr)" = "$irr" ] || return 1
	lost_at=$1
	t=$(stat -c %Y "$ctl/alive")
	monitor stop 'info cpus' 'info registers' 'info lapic' >"$ctl/halted"
	qpid=$(pgrep -P $qemu_pid | head -n1)
	if grep -q 'HLT=1' "$ctl/halted"; then seen=halted; else seen=running; fi
	lost_seen="$seen after $(($(date +%s) - $1)) s of silence, local APIC IRR: $irr"
	[ -z "$qpid" ] || lost_seen="$lost_seen; QEMU: $(qemu_cpu_state "$qpid" "$ctl/halted")"
	monitor cont 'sendkey shift' >/dev/null
	for _ in 1 2 3 4 5; do
		sleep 2
		[ "$(stat -c %Y "$ctl/alive")" != "$t" ] && return 0
	done
	return 1
}

# the hang watchdog: L1's kernel says when its CPUs stop making progress
(
	lost_at=
	lost_seen=
	while kill -0 $qemu_pid 2>/dev/null; do
		# a lockup reported for NK_LOCKUP s or more: not a passing stall;
		# or L1's own watchdog saw a CPU stuck in an L2 guest
		line=$(awk -v limit="$lockup" '
			/nested-kvm-hung: / { print; exit }
			/soft lockup - CPU#/ && match($0, /stuck for [0-9]+s/) &&
				substr($0, RSTART + 10, RLENGTH - 11) + 0 >= limit { print; exit }' "$ctl/console.log" 2>/dev/null)
		# a silence of 6 s with an interrupt waiting: the lost wake-up
		a=$(stat -c %Y "$ctl/alive" 2>/dev/null)
		# (what was seen in an earlier silence is not about this one)
		[ "$a" = "$lost_at" ] || lost_seen=
		if [ -z "$line" ] && [ -n "$a" ] && [ "$a" != "$lost_at" ] &&
			[ $(($(date +%s) - a)) -ge 6 ] && wake_lost "$a"; then
			log "L1's CPU sat with an interrupt waiting for $(($(date +%s) - a)) s ($lost_seen); a key press woke it"
			continue
		fi
		# L1's watchdog has stopped: no CPU of L1 runs (with one vCPU,
		# the stuck CPU is all of L1)
		if [ -z "$line" ] && [ -e "$ctl/alive" ] &&
			[ $(($(date +%s) - $(stat -c %Y "$ctl/alive"))) -gt "$silence" ]; then
			line="nested-kvm-hung: L1's watchdog went silent for $silence s (no CPU of L1 runs); $(qemu_threads "$(pgrep -P $qemu_pid | head -n1)")"
		fi
		if [ -n "$line" ]; then
			echo "$line" | tr -d '\r' >"$ctl/hung"
			hang_report "$(pgrep -P $qemu_pid | head -n1)"
			pkill -P $qemu_pid 2>/dev/null || kill $qemu_pid
			exit 0
		fi
		sleep 2
	done
) &
tails+=($!)
tail -q -s 0.2 -c +1 -f --pid=$qemu_pid "$ctl/stderr" >&2 &
tails+=($!)
if [ "${NK_CONSOLE:-0}" = 1 ]; then
	touch "$ctl/console.log"
	tail -q -s 0.2 -c +1 -f --pid=$qemu_pid "$ctl/console.log" >&2 &
	tails+=($!)
fi
wait $qemu_pid
qemu_status=$?
qemu_pid=""
for t in "${tails[@]}"; do wait "$t" 2>/dev/null; done
tails=()
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ -s "$ctl/status" ]; then
	status=$(cat "$ctl/status")
	[ "${NK_QUIET:-0}" = 1 ] || log "L1 ran ${elapsed}s; the command exited with $status"
	exit "$status"
fi
if [ -s "$ctl/hung" ]; then
	log "L1 hung after ${elapsed}s: $(sed 's/^\[ *[0-9.]*\] //' "$ctl/hung")"
	exit 123
fi
if [ $qemu_status = 124 ] || [ $qemu_status = 137 ]; then
	log "timed out after ${limit}s"
	exit 124
fi
log "L1 failed after ${elapsed}s (qemu status $qemu_status): $(cat "$ctl/l1-error" 2>/dev/null)"
grep -v "TCG doesn't support" "$ctl/qemu.log" | tail -n 5 >&2
tr -d '\r' <"$ctl/console.log" | tail -n 30 >&2
exit 125
