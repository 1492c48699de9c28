#!/bin/bash
# End-to-end for the project's test infrastructure under tests/: the test
# guest builder (tests/guest/build-test-iso.sh), the installed disk made
# without a VM (make-installed-disk.sh), cross-checked by booting it in QEMU.
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
# unpacked packages are kept across runs (the build itself goes to $T)
export IMGVM_GUEST_CACHE=${IMGVM_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgvm/guest-build}
G=$T/guest

tests/guest/build-test-iso.sh "$G" >"$T/build.log" 2>&1
rc=$?
if [ $rc != 0 ]; then
	# the log outlives the run's temporary folder
	kept=build/test-logs/guest/build-test-iso.$(date -u +%Y%m%d-%H%M%S).log
	mkdir -p "$(dirname "$kept")" && cp "$T/build.log" "$kept"
	fail "build-test-iso.sh ended with status $rc: $(tail -3 "$T/build.log") [log: $PWD/$kept]"
	finish
	exit
fi
. "$G/guest.env"
ok "build-test-iso.sh built the guest (Linux $KVER)"

start=$(date +%s.%N)
tests/guest/build-test-iso.sh "$G" >"$T/build2.log" 2>&1
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
if grep -q 'up to date' "$T/build2.log" && awk -v s="$secs" 'BEGIN { exit !(s < 3) }'; then
	ok "second build is a no-op (${secs}s)"
else
	fail "second build (${secs}s): $(cat "$T/build2.log")"
fi

# the ISOs: El Torito boot image, isolinux config, marker
for iso in installer bench diag; do
	label=$iso
	[ $iso = installer ] && label=install
	rm -rf "$T/x"
	mkdir -p "$T/x"
	if xorriso -osirrox on -indev "$G/$iso.iso" -extract /isolinux/isolinux.cfg "$T/x/cfg" \
		-extract /marker.gz "$T/x/marker.gz" -report_el_torito plain >"$T/x/report" 2>&1 &&
		grep -q 'El Torito boot img' "$T/x/report" && grep -qx "DEFAULT $label" "$T/x/cfg" &&
		[ "$(zcat "$T/x/marker.gz" | sha256sum | cut -d' ' -f1)" = "$MARKER_SHA256" ]; then
		ok "$iso.iso: bootable, default label $label, marker sha256 matches"
	else
		fail "$iso.iso: $(tail -3 "$T/x/report")"
	fi
done

# the initramfs: /init with the marker checksum, the storage modules
rm -rf "$T/initrd"
mkdir -p "$T/initrd"
(cd "$T/initrd" && zcat "$G/initrd.gz" | cpio -id --quiet 2>/dev/null)
mods=$(cat "$T/initrd/lib/modules/$KVER/modules.order.imgvm" 2>/dev/null)
missing=""
for m in ahci.ko sd_mod.ko sr_mod.ko isofs.ko ext4.ko vfat.ko; do
	grep -q "/$m\$" <<<"$mods" || missing="$missing $m"
done
if [ -z "$missing" ] && grep -q "MARKER_SHA256=$MARKER_SHA256" "$T/initrd/init" &&
	[ -x "$T/initrd/usr/sbin/mke2fs" ] && [ -x "$T/initrd/usr/bin/extlinux" ]; then
	ok "initramfs: /init, storage modules, mke2fs/sfdisk/extlinux"
else
	fail "initramfs (missing:$missing)"
fi

# the installed disk, made on the host
disk=$T/installed.raw
if tests/guest/make-installed-disk.sh "$G" "$disk" 128 >"$T/mk.log" 2>&1; then
	export MTOOLS_SKIP_CHECK=1
	layout=$(sfdisk -d "$disk" 2>/dev/null | grep "^$disk")
	if grep -q 'start= *2048' <<<"$layout" && grep -q 'type=c' <<<"$layout" &&
		grep -q 'bootable' <<<"$layout" &&
		[ "$(mtype -i "$disk@@1M" ::marker.bin | sha256sum | cut -d' ' -f1)" = "$MARKER_SHA256" ] &&
		mdir -a -i "$disk@@1M" ::ldlinux.sys >/dev/null 2>&1 &&
		cmp -s -n 440 "$disk" /usr/lib/syslinux/mbr/mbr.bin; then
		ok "make-installed-disk.sh: MBR, bootable FAT32 at 1 MiB, syslinux, marker"
	else
		fail "installed disk layout: $layout"
	fi
else
	fail "make-installed-disk.sh: $(tail -3 "$T/mk.log")"
fi

# an independent VMM boots it: QEMU (TCG), SeaBIOS, its ICH9 AHCI
if command -v qemu-system-x86_64 >/dev/null && [ -e "$disk" ]; then
	timeout 240 qemu-system-x86_64 -accel tcg -M q35 -m 512 -nographic -vga none -nic none \
		-no-reboot -drive if=none,id=hd,file="$disk",format=raw -device ide-hd,bus=ide.0,drive=hd \
		</dev/null >"$T/qemu.log" 2>&1
	if grep -qa MARKER-OK "$T/qemu.log" && grep -qa WRITE-OK "$T/qemu.log" &&
		[ "$(mtype -i "$disk@@1M" ::guestw.txt | sha256sum | cut -d' ' -f1)" = "$WRITE_SHA256" ]; then
		ok "QEMU boots the installed disk: MARKER-OK, the guest's write is in the image"
	else
		fail "QEMU boot of the installed disk: $(tr -d '\r' <"$T/qemu.log" | grep -a 'guest\[\|BAD\|FAIL' | tail -3)"
	fi
else
	skip "QEMU boot of the installed disk" "no qemu-system-x86_64"
fi

# The nested KVM test host's contract (status forwarded, output streamed,
# work dir writable, root untouched) is checked by vmm.sh, on the one
# nested host start that runs every guest.
finish
