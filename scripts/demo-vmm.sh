#!/bin/bash
# demo-vmm.sh: the seed lab with our own tools, step by step: build the test
# guest, create a 2 GiB dynamic VDI, install from the ISO onto it with
# imgvm (the CD is ejected at the installer's reboot and the machine comes
# back up from the disk in the same run), boot the installed disk again on
# its own with a VGA screen and say where the PNG of that screen at
# power-off is (with the firmware's log kept, so that a boot that stalls
# shows where), check the image with imgtool and qemu-img, convert it to
# VMDK and VHD and show that all three hold the same disk.
#
# imgvm runs directly on hardware KVM; elsewhere inside the nested test host
# (tests/nested-kvm.sh); without either the VM steps are skipped, saying why.
# Env: DEMO_DIR (work dir, default a fresh one under /tmp, kept).
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
B=${B:-build}
IMGTOOL=${IMGTOOL:-$ROOT/$B/bin/imgtool}
IMGVM=${IMGVM:-$ROOT/$B/bin/imgvm}
# The guest's build tree lives in its cache (IMGVM_GUEST_CACHE, default
# OUTDIR/.cache): a private one, so a concurrent build (make check and make
# demo at once) cannot pull files from under us.  Downloaded .debs are
# shared anyway (IMGVM_DEB_CACHE).

step() { printf '\n== %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# show LOG PATTERN...: the console lines that tell the story
show() {
	local log=$1
	shift
	tr -d '\r' <"$log" | grep -aE "$(
		IFS='|'
		echo "$*"
	)" | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/^/   | /' | head -n 20
}

vm_steps() {
	local W=$1 t rc
	step "3. install: imgvm boot --cdrom installer-reboot.iso --disk lab.vdi --eject-on-reboot"
	t=$(now)
	"$IMGVM" boot --memory 512M --cdrom "$W/guest/installer-reboot.iso" --disk "$W/lab.vdi" \
		--eject-on-reboot --timeout 900 --serial "file:$W/install.log" </dev/null
	rc=$?
	show "$W/install.log" 'SeaBIOS \(version' 'ISOLINUX|EXTLINUX|SYSLINUX' 'Linux version' \
		'INSTALL-OK|INSTALL-FAIL' 'rebooting' 'BOOTED-FROM-DISK' 'MARKER-OK|MARKER-BAD' 'Power down'
	echo "   imgvm exit $rc after $(since "$t") s (full console: $W/install.log)"
	grep -qa 'MARKER-OK' "$W/install.log" && [ $rc = 0 ] || return 1

	step "4. boot the installed disk on its own, with a screen: imgvm boot --disk lab.vdi --no-reboot --screenshot-on-exit screen.png"
	t=$(now)
	# the firmware's log is kept: a stuck boot shows where it stood
	"$IMGVM" boot --disk "$W/lab.vdi" --no-reboot --timeout 300 --serial "file:$W/boot.log" \
		--firmware-log "$W/boot-firmware.log" --screenshot-on-exit "$W/screen.png" </dev/null
	rc=$?
	show "$W/boot.log" 'SeaBIOS \(version' 'Booting from' 'BOOTED-FROM-DISK' 'MARKER-OK|MARKER-BAD' 'Power down'
	echo "   imgvm exit $rc after $(since "$t") s"
	if [ -s "$W/screen.png" ]; then
		echo "   the guest's VGA screen at power-off: $W/screen.png (its text: $W/screen.txt)"
	else
		echo "   no screenshot (firmware log: $W/boot-firmware.log)"
	fi
	grep -qa 'MARKER-OK' "$W/boot.log" && [ $rc = 0 ]
}

if [ "${1:-}" = --inside ]; then
	vm_steps "$2"
	exit
fi

W=${DEMO_DIR:-$(mktemp -d /tmp/imgvm-demo.XXXXXX)}
mkdir -p "$W"
echo "imgvm demo: the seed lab (install an OS from an ISO onto a VDI, eject, boot it) in $W"

step "1. build the test guest from Debian packages (tests/guest/build-test-iso.sh)"
if ! tests/guest/build-test-iso.sh "$W/guest" >"$W/guest-build.log" 2>&1; then
	echo "   failed: $(tail -3 "$W/guest-build.log")"
	exit 1
fi
tail -1 "$W/guest-build.log" | sed 's/^/   /'

step "2. create a 2 GiB dynamic VDI: imgtool create -f vdi lab.vdi 2G"
rm -f "$W/lab.vdi"
"$IMGTOOL" create -f vdi "$W/lab.vdi" 2G | sed 's/^/   /' || exit 1
echo "   on disk: $(du -h "$W/lab.vdi" | cut -f1)"

kvm_ok() {
	[ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
	! { [ -e /sys/module/kvm_pvm ] && [ ! -e /sys/module/kvm_intel ] && [ ! -e /sys/module/kvm_amd ]; }
}
if kvm_ok; then
	echo
	echo "(hardware KVM: imgvm runs directly)"
	vm_steps "$W"
	rc=$?
elif [ -x tests/nested-kvm.sh ] && command -v qemu-system-x86_64 >/dev/null; then
	echo
	echo "(this host's /dev/kvm cannot run firmware (kvm_pvm): imgvm runs inside the nested"
	echo " test host, tests/nested-kvm.sh, a QEMU guest with emulated AMD SVM and kvm_amd;"
	echo " expect it to be several times slower than on hardware)"
	tests/nested-kvm.sh -w "$ROOT" -w "$W" -t 1800 -- bash "$ROOT/scripts/demo-vmm.sh" --inside "$W"
	rc=$?
	if [ $rc = 123 ] || [ $rc = 125 ]; then
		# the test host itself hung or died (QEMU TCG's emulated SVM),
		# not imgvm
		echo "(the nested test host hung or died; starting it once more on a fresh lab.vdi)"
		rm -f "$W/lab.vdi"
		"$IMGTOOL" create -q -f vdi "$W/lab.vdi" 2G || exit 1
		tests/nested-kvm.sh -w "$ROOT" -w "$W" -t 1800 -- bash "$ROOT/scripts/demo-vmm.sh" --inside "$W"
		rc=$?
	fi
else
	echo
	echo "skipped the VM steps: no hardware KVM and no nested test host here"
	exit 0
fi
[ $rc = 0 ] || {
	echo "imgvm demo: FAILED (logs in $W)"
	exit 1
}

step "5. check the installed image: imgtool check, qemu-img check"
"$IMGTOOL" check "$W/lab.vdi" 2>&1 | sed 's/^/   /'
if command -v qemu-img >/dev/null; then
	echo "   qemu-img: $(qemu-img check -f vdi "$W/lab.vdi" 2>&1 | tail -1)"
fi

step "6. convert it: imgtool convert -O vmdk / -O vhd, then info and checksum"
ok=1
for fmt in vmdk vhd; do
	opts=
	[ "$fmt" = vmdk ] && opts="-o subformat=monolithicSparse"
	[ "$fmt" = vhd ] && opts="-o subformat=dynamic"
	rm -f "$W/lab.$fmt"
	# shellcheck disable=SC2086
	"$IMGTOOL" convert -q -O "$fmt" $opts "$W/lab.vdi" "$W/lab.$fmt" || ok=0
done
for img in "$W/lab.vdi" "$W/lab.vmdk" "$W/lab.vhd"; do
	"$IMGTOOL" info "$img" | grep -E '^(image|file format|virtual size|disk size)' |
		tr '\n' ';' | sed 's/;$//; s/;/, /g; s/^/   /'
	echo
done
"$IMGTOOL" checksum "$W/lab.vdi" "$W/lab.vmdk" "$W/lab.vhd" | tee "$W/sums" | sed 's/^/   /'
if [ "$(awk '{print $1}' "$W/sums" | sort -u | wc -l)" = 1 ] && [ $ok = 1 ]; then
	echo "   the same virtual disk in all three formats"
else
	echo "   checksums differ!"
	exit 1
fi
if command -v qemu-img >/dev/null; then
	echo "   qemu-img compare lab.vdi lab.vmdk: $(qemu-img compare "$W/lab.vdi" "$W/lab.vmdk" 2>&1 | tail -1)"
fi
echo
echo "imgvm demo: OK (work dir $W)"
