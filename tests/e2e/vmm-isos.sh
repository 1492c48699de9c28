#!/bin/bash
# End-to-end: ISOs nobody here wrote reach their first screen on imgvm's
# serial console: GRUB's rescue CD (grub-rescue-pc), iPXE (ipxe), and
# Debian's installer (debian-installer-12-netboot-amd64's netboot tree put
# behind isolinux, as Debian's mini.iso is) up to its language screen after
# "console=ttyS0" is typed at its boot menu.  Runs on hardware KVM, else in
# the nested test host (tests/nested-kvm.sh), else skips saying why.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
. tests/e2e/lib.bash
DRIVE="python3 $ROOT/tests/guest/serial-drive.py"

hardware_kvm() {
	[ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
	! { [ -e /sys/module/kvm_pvm ] && [ ! -e /sys/module/kvm_intel ] && [ ! -e /sys/module/kvm_amd ]; }
}

# Debian's mini.iso, rebuilt from the installed netboot tree: the text
# installer's files unchanged, isolinux from Debian's isolinux package,
# and a config that includes D-I's own boot menu.
build_di_iso() {
	local out=$1 tree=/usr/lib/debian-installer/images/12/amd64/text w
	[ -d "$tree/debian-installer" ] && [ -e /usr/lib/ISOLINUX/isolinux.bin ] &&
		command -v xorriso >/dev/null || return 1
	w=$(dirname "$out")/di-tree
	rm -rf "$w"
	mkdir -p "$w"
	cp -a "$tree/debian-installer" "$w/"
	cp /usr/lib/ISOLINUX/isolinux.bin "$w/"
	cp "$w/debian-installer/amd64/boot-screens/ldlinux.c32" "$w/"
	printf '%s\n' 'path debian-installer/amd64/boot-screens/' 'prompt 0' 'timeout 0' \
		'include debian-installer/amd64/boot-screens/menu.cfg' \
		'default debian-installer/amd64/boot-screens/vesamenu.c32' >"$w/isolinux.cfg"
	xorriso -as mkisofs -quiet -o "$out" -V ISOIMAGE -r -J -b isolinux.bin -c boot.cat \
		-no-emul-boot -boot-load-size 4 -boot-info-table "$w" 2>/dev/null
}

# first_screen NAME ISO PATTERN [serial-drive args...]
first_screen() {
	local name=$1 iso=$2 pattern=$3 log=$T/$1.log
	shift 3
	if [ ! -e "$iso" ]; then
		skip "$name" "$iso not found (make deps installs it)"
		return
	fi
	if $DRIVE --log "$log" --timeout 420 --until "$pattern" "$@" -- \
		"$IMGVM" boot --memory 1G --cdrom "$iso" --timeout 450 >"$log.drive" 2>&1; then
		ok "$name reaches its first screen ('$pattern') on the serial console"
	else
		fail "$name: $(tail -3 "$log.drive") | $(tr -d '\r' <"$log" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' | tail -c 300)"
	fi
}

iso_cases() {
	first_screen grub-rescue /usr/lib/grub-rescue/grub-rescue-cdrom.iso 'GNU GRUB'
	first_screen ipxe /usr/lib/ipxe/ipxe.iso 'iPXE'
	if build_di_iso "$T/di-mini.iso"; then
		first_screen debian-installer "$T/di-mini.iso" 'Select a language' \
			--send Install '\t' --send quiet ' vga=normal console=ttyS0,115200\r'
	else
		skip debian-installer "no netboot tree (debian-installer-12-netboot-amd64), isolinux or xorriso"
	fi
}

if [ "${1:-}" = --inside ]; then
	T=$2
	iso_cases
	finish
	exit
fi

e2e_tmpdir
T=$E2E_TMP
if hardware_kvm; then
	echo "# hardware KVM: running directly"
	iso_cases
elif [ -x tests/nested-kvm.sh ] && command -v qemu-system-x86_64 >/dev/null; then
	echo "# no hardware KVM here: running inside the nested test host"
	tests/nested-kvm.sh -w "$ROOT" -w "$T" -t 1500 -- bash "$ROOT/tests/e2e/vmm-isos.sh" --inside "$T" >"$T/nested.out" 2>&1
	nrc=$?
	grep -E '^(ok|FAIL|skip) - ' "$T/nested.out"
	sum=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$T/nested.out" | tail -1)
	if [ -n "$sum" ]; then
		p=${sum%% passed*}
		f=${sum#*, }
		E2E_PASS=$((E2E_PASS + p))
		E2E_FAIL=$((E2E_FAIL + ${f%% failed*}))
	else
		fail "nested test host run (exit $nrc): $(tail -5 "$T/nested.out")"
	fi
else
	skip "real ISOs" "no hardware KVM and no nested test host (tests/nested-kvm.sh, qemu-system-x86_64)"
fi
finish
