#!/bin/bash
# End-to-end for imgvm: the command line on any host, then real boots under
# KVM: directly on hardware KVM (VT-x/AMD-V), otherwise inside the nested
# test host (tests/nested-kvm.sh: QEMU TCG with emulated SVM and kvm_amd),
# skipped with the reason printed only when neither is possible.
#
# The KVM cases run in one go (one nested host start): this script calls
# itself with --inside there.  Env: VMM_E2E_TIMEOUT (per guest run, s).
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
. tests/e2e/lib.bash
TIMEOUT=${VMM_E2E_TIMEOUT:-400}
# The guest's build tree lives in its cache (IMGVM_GUEST_CACHE, default
# OUTDIR/.cache): a private one, so a concurrent build (make check and make
# demo at once) cannot pull files from under us.  Downloaded .debs are
# shared anyway (IMGVM_DEB_CACHE).

# ---- helpers -------------------------------------------------------------

# hardware_kvm: /dev/kvm usable and not kvm_pvm (which cannot run BIOS code)
hardware_kvm() {
	[ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
	if [ -e /sys/module/kvm_pvm ] && [ ! -e /sys/module/kvm_intel ] &&
		[ ! -e /sys/module/kvm_amd ]; then
		return 1
	fi
	return 0
}

nested_script() {
	local s
	for s in "$ROOT/tests/nested-kvm.sh" ${NESTED_KVM:+"$NESTED_KVM"}; do
		[ -x "$s" ] && { echo "$s"; return 0; }
	done
	return 1
}

# run_vm LOG ARGS...: imgvm boot with the serial console in LOG; sets RC
run_vm() {
	local log=$1
	shift
	timeout -k 30 $((TIMEOUT + 30)) "$IMGVM" boot --serial "file:$log" \
		--timeout "$TIMEOUT" "$@" </dev/null 2>"$log.err"
	RC=$?
}

# ---- KVM cases (on hardware KVM or inside the nested host) ----------------

kvm_cases() {
	local T=$1 log

	# 1. SeaBIOS on a machine with nothing to boot: banner on the serial
	# console (etc/sercon-port), its log on debugcon, "No bootable device",
	# then the firmware reboots -> --no-reboot ends with 0.
	log=$T/empty.log
	run_vm "$log" --no-reboot --firmware-log "$T/fw.log"
	if [ $RC = 0 ] && grep -qa 'SeaBIOS (version' "$log" &&
		grep -qa 'No bootable device' "$log"; then
		ok "SeaBIOS banner and 'No bootable device' on serial, exit 0 at its reboot"
	else
		fail "empty machine (rc=$RC): $(tr -d '\r' <"$log" | tail -c 300) $(cat "$log.err")"
	fi
	if grep -q 'Found QEMU fw_cfg' "$T/fw.log" &&
		grep -q 'QEMU fw_cfg DMA interface supported' "$T/fw.log" &&
		grep -q 'Copying ACPI RSDP' "$T/fw.log" &&
		grep -q 'Using pmtimer' "$T/fw.log"; then
		ok "firmware log (0x402): fw_cfg with DMA, PM timer, ACPI tables built"
	else
		fail "firmware log: $(tail -5 "$T/fw.log")"
	fi
	if grep -q 'qemu/e820: addr 0x0000000000000000 len 0x0000000020000000 \[RAM\]' "$T/fw.log"; then
		ok "etc/e820 gives the firmware 512 MiB of RAM"
	else
		fail "e820: $(grep e820 "$T/fw.log")"
	fi

	# 2. More RAM than fits below 4 GiB: the rest goes above 4 GiB.
	log=$T/big.log
	run_vm "$log" --no-reboot --memory 3584M --firmware-log "$T/fw-big.log"
	if [ $RC = 0 ] && grep -q 'addr 0x0000000100000000 len 0x0000000020000000 \[RAM\]' "$T/fw-big.log"; then
		ok "3.5 GiB guest: 3 GiB below 4 GiB, 512 MiB above"
	else
		fail "3.5 GiB guest (rc=$RC): $(grep e820 "$T/fw-big.log")"
	fi

	# 3. Without --no-reboot the machine resets and SeaBIOS starts again;
	# --timeout ends it with 124 and one line.
	log=$T/reboot.log
	VMM_T=$TIMEOUT
	TIMEOUT=25 run_vm "$log"
	TIMEOUT=$VMM_T
	if [ $RC = 124 ] && [ "$(grep -ca 'SeaBIOS (version' "$log")" -ge 2 ] &&
		grep -q 'timeout' "$log.err" && [ "$(wc -l <"$log.err")" = 1 ]; then
		ok "guest reboot resets the platform (SeaBIOS starts again); --timeout -> 124"
	else
		fail "reboot/timeout (rc=$RC, banners=$(grep -ca 'SeaBIOS (version' "$log")): $(cat "$log.err")"
	fi

	# 4. --serial stdio through a pipe
	if timeout 120 "$IMGVM" boot --no-reboot --timeout 60 </dev/null 2>/dev/null |
		grep -qa 'SeaBIOS (version'; then
		ok "--serial stdio works through a pipe"
	else
		fail "--serial stdio through a pipe"
	fi

	if [ ! -e "$PREP/ready" ]; then
		skip "disk boots and installs" "$(cat "$PREP/why" 2>/dev/null)"
		return
	fi
	disk_cases "$T"
	install_cases "$T"
}

# ---- prepared on the host (fast), booted under KVM, checked on the host --

# prepare: the test guest, its installed disk (made without a VM) in each
# format, and blank images to install onto.  Leaves $PREP/ready or a
# reason in $PREP/why.
prepare() {
	local fmt opts
	mkdir -p "$PREP"
	if [ ! -f "$ROOT/vmm/devices/ahci.c" ]; then
		echo "imgvm has no AHCI controller yet" >"$PREP/why"
		return
	fi
	if ! "$ROOT/tests/guest/build-test-iso.sh" "$GUEST" >"$PREP/guest.log" 2>&1; then
		fail "tests/guest/build-test-iso.sh: $(tail -2 "$PREP/guest.log")"
		echo "the test guest did not build" >"$PREP/why"
		return
	fi
	if ! "$ROOT/tests/guest/make-installed-disk.sh" "$GUEST" "$PREP/installed.raw" 128 >"$PREP/disk.log" 2>&1; then
		fail "make-installed-disk.sh: $(tail -2 "$PREP/disk.log")"
		echo "no installed disk" >"$PREP/why"
		return
	fi
	for fmt in vdi vhd vmdk; do
		if ! "$IMGTOOL" convert -O "$fmt" "$PREP/installed.raw" "$PREP/installed.$fmt" 2>"$PREP/convert.err"; then
			fail "imgtool convert installed.raw to $fmt: $(cat "$PREP/convert.err")"
		fi
		case $fmt in
		vhd) opts="-o subformat=dynamic" ;;
		vmdk) opts="-o subformat=monolithicSparse" ;;
		*) opts= ;;
		esac
		# shellcheck disable=SC2086
		"$IMGTOOL" create -q -f "$fmt" $opts "$PREP/new.$fmt" 512M 2>"$PREP/create.err" ||
			fail "imgtool create $fmt: $(cat "$PREP/create.err")"
	done
	touch "$PREP/ready"
}

# qemu_check FMT IMAGE: qemu-img check is clean (it has no check for VHD)
qemu_check() {
	local fmt=$1 img=$2
	command -v qemu-img >/dev/null || return 0
	[ "$fmt" = vhd ] && return 0
	qemu-img check -f "$fmt" "$img" >"$img.check" 2>&1
}

# After the boots: the guest's write is in each image, every image passes
# qemu-img check.
verify() {
	local fmt img
	[ -e "$PREP/ready" ] || return
	for fmt in vdi vhd vmdk; do
		img=$PREP/installed.$fmt
		[ -e "$T/in/disk-$fmt.log" ] || continue
		if "$IMGTOOL" convert -O raw "$img" "$T/back.raw" 2>/dev/null &&
			mtype -i "$T/back.raw@@1M" ::guestw.txt >/dev/null 2>&1; then
			ok "the guest's write (guestw.txt) landed in installed.$fmt through libimg"
		else
			fail "guest write in installed.$fmt"
		fi
		rm -f "$T/back.raw"
		if qemu_check "$fmt" "$img"; then
			ok "qemu-img check clean on installed.$fmt after the guest wrote"
		else
			fail "qemu-img check installed.$fmt: $(tail -3 "$img.check")"
		fi
	done
	for fmt in vdi vhd vmdk; do
		img=$PREP/new.$fmt
		[ -e "$T/in/install-$fmt.log" ] || continue
		if qemu_check "$fmt" "$img"; then
			ok "qemu-img check clean on the $fmt installed by imgvm"
		else
			fail "qemu-img check on new.$fmt: $(tail -3 "$img.check")"
		fi
	done
}

# Boot the installed test disk in each format: MARKER-OK, then the guest
# writes a file (WRITE-OK).  The VMDK boot uses two vCPUs.
disk_cases() {
	local T=$1 fmt log cpus
	for fmt in vdi vhd vmdk; do
		log=$T/disk-$fmt.log
		cpus=1
		[ "$fmt" = vmdk ] && cpus=2
		run_vm "$log" --disk "$PREP/installed.$fmt" --cpus $cpus --no-reboot
		if [ $RC = 0 ] && grep -qa 'MARKER-OK' "$log" && grep -qa 'WRITE-OK' "$log" &&
			! grep -qa 'MARKER-BAD' "$log"; then
			ok "boot installed.$fmt -> MARKER-OK, WRITE-OK, power-off, exit 0"
		else
			fail "boot installed.$fmt (rc=$RC): $(tr -d '\r' <"$log" | tail -c 400) $(cat "$log.err")"
		fi
		if [ $cpus = 2 ]; then
			if grep -qa 'Brought up 1 node, 2 CPUs' "$log"; then
				ok "--cpus 2: Linux brings up both vCPUs"
			else
				fail "--cpus 2: $(grep -a -E 'smp|CPU' "$log" | head -3)"
			fi
		fi
	done
}

# The disk imgvm installed, converted to VMDK, still boots under imgvm; and
# QEMU (with KVM, AHCI) boots the VDI imgvm installed.
converted_cases() {
	local T=$1 img=$2 log=$1/converted.log qlog=$1/qemu.log
	if "$IMGTOOL" convert -O vmdk "$img" "$T/converted.vmdk" 2>"$T/convert.err"; then
		run_vm "$log" --disk "$T/converted.vmdk" --no-reboot
		if [ $RC = 0 ] && grep -qa 'MARKER-OK' "$log"; then
			ok "the installed vdi converted to vmdk boots -> MARKER-OK"
		else
			fail "converted vmdk boot (rc=$RC): $(tr -d '\r' <"$log" | tail -c 300) $(cat "$log.err")"
		fi
	else
		fail "imgtool convert new.vdi to vmdk: $(cat "$T/convert.err")"
	fi
	if ! command -v qemu-system-x86_64 >/dev/null; then
		skip "QEMU boots our disk" "no qemu-system-x86_64"
		return
	fi
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel kvm -M pc -m 512 -smp 1 \
		-display none -vga none -nic none -no-reboot -serial "file:$qlog" \
		-drive if=none,id=hd0,file="$img",format=vdi -device ahci,id=ahci0 \
		-device ide-hd,bus=ahci0.0,drive=hd0 </dev/null >"$qlog.err" 2>&1
	if grep -qa 'MARKER-OK' "$qlog"; then
		ok "QEMU (KVM, AHCI) boots the vdi imgvm installed -> MARKER-OK"
	else
		fail "QEMU boot of our vdi: $(tail -c 300 "$qlog" | tr -d '\r') $(tail -2 "$qlog.err")"
	fi
}

# Install from the test ISO onto fresh images: VDI in two runs (install
# with --no-reboot, then boot the disk), VHD and VMDK in one run each with
# --eject-on-reboot (the guest reboots after installing, the tray is
# emptied, the machine resets and boots the installed disk).
install_cases() {
	local T=$1 fmt img log
	for fmt in vdi vhd vmdk; do
		img=$PREP/new.$fmt
		log=$T/install-$fmt.log
		if [ "$fmt" = vdi ]; then
			run_vm "$log" --cdrom "$GUEST/installer.iso" --disk "$img" --no-reboot
			if [ $RC = 0 ] && grep -qa 'INSTALL-OK' "$log"; then
				ok "install from installer.iso onto a new $fmt -> INSTALL-OK, exit 0"
			else
				fail "install onto $fmt (rc=$RC): $(tr -d '\r' <"$log" | tail -c 400) $(cat "$log.err")"
				continue
			fi
			log=$T/boot-$fmt.log
			run_vm "$log" --disk "$img" --no-reboot
			if [ $RC = 0 ] && grep -qa 'MARKER-OK' "$log"; then
				ok "the installed $fmt boots -> MARKER-OK"
			else
				fail "boot installed $fmt (rc=$RC): $(tr -d '\r' <"$log" | tail -c 400) $(cat "$log.err")"
			fi
			converted_cases "$T" "$img"
		else
			run_vm "$log" --cdrom "$GUEST/installer-reboot.iso" --disk "$img" --eject-on-reboot
			if [ $RC = 0 ] && grep -qa 'INSTALL-OK' "$log" && grep -qa 'MARKER-OK' "$log" &&
				[ "$(grep -ca 'SeaBIOS (version' "$log")" = 2 ]; then
				ok "install onto a new $fmt, eject at the reboot, boot it -> MARKER-OK in one run"
			else
				fail "one-run install+boot on $fmt (rc=$RC): $(tr -d '\r' <"$log" | tail -c 400) $(cat "$log.err")"
			fi
		fi
	done
}

# ---- inside the nested host ---------------------------------------------

if [ "${1:-}" = --inside ]; then
	T=$2
	GUEST=$3
	PREP=$4
	kvm_cases "$T"
	finish
	exit
fi

# ---- on the host: the command line ---------------------------------------

e2e_tmpdir
T=$E2E_TMP
GUEST=${VMM_E2E_GUEST:-$T/guest}
PREP=$T/prep

help=$("$IMGVM" --help 2>&1)
missing=
for o in --memory --cpus --disk format= readonly --cdrom --boot --bios --serial \
	--no-reboot --eject-on-reboot --timeout --firmware-log; do
	grep -q -- "$o" <<<"$help" || missing="$missing $o"
done
check "imgvm --help documents every option${missing:+ (missing:$missing)}" test -z "$missing"
check "imgvm --version" grep -q '^imgvm [0-9]' <<<"$("$IMGVM" --version)"

bad_option() { # NAME EXPECTED-TEXT ARGS...
	local name=$1 want=$2 out rc
	shift 2
	out=$("$IMGVM" "$@" 2>&1 </dev/null)
	rc=$?
	if [ $rc = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q -- "$want" <<<"$out"; then
		ok "$name: one line, exit 1"
	else
		fail "$name (rc=$rc): $out"
	fi
}
bad_option "unknown option" "unknown" boot --frobnicate
bad_option "bad memory size" "memory" boot --memory 12Q
bad_option "zero cpus" "cpus" boot --cpus 0
bad_option "bad --boot" "boot" boot --boot floppy
bad_option "--boot cdrom without --cdrom" "cdrom" boot --boot cdrom
bad_option "bad --serial" "serial" boot --serial tcp:1
bad_option "two disks" "one --disk" boot --disk a.vdi --disk b.vdi
bad_option "unknown command" "unknown command" frobnicate

if [ -e /sys/module/kvm_pvm ] && ! hardware_kvm; then
	out=$("$IMGVM" boot --no-reboot 2>&1 </dev/null)
	rc=$?
	if [ $rc = 3 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q 'kvm_pvm' <<<"$out" &&
		grep -q 'nested' <<<"$out"; then
		ok "kvm_pvm host: one line pointing to the fix, exit 3"
	else
		fail "kvm_pvm detection (rc=$rc): $out"
	fi
fi

# ---- KVM: here, in the nested host, or skipped --------------------------
if hardware_kvm; then
	echo "# hardware KVM: running the VMM cases directly"
	prepare
	mkdir -p "$T/in"
	kvm_cases "$T/in"
	verify
elif ns=$(nested_script) && command -v qemu-system-x86_64 >/dev/null; then
	echo "# no hardware KVM here: running the VMM cases inside the nested test host ($ns)"
	prepare
	mkdir -p "$T/in" "$GUEST"
	"$ns" -w "$ROOT" -w "$T" -t 1800 -- bash "$ROOT/tests/e2e/vmm.sh" --inside "$T/in" "$GUEST" "$PREP" >"$T/nested.out" 2>&1
	nrc=$?
	grep -E '^(ok|FAIL|skip) - ' "$T/nested.out"
	sum=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$T/nested.out" | tail -1)
	if [ -n "$sum" ]; then
		p=${sum%% passed*}
		f=${sum#*, }
		f=${f%% failed*}
		E2E_PASS=$((E2E_PASS + p))
		E2E_FAIL=$((E2E_FAIL + f))
	else
		fail "nested test host run (exit $nrc): $(tail -5 "$T/nested.out")"
	fi
	verify
else
	skip "VMM boots" "no hardware KVM and no nested test host (tests/nested-kvm.sh, qemu-system-x86_64)"
fi
finish
