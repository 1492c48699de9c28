#!/bin/bash
# build-test-iso.sh OUTDIR
#
# Builds the project's test guest from Debian packages only (the kernel
# linux-image-*-amd64 and busybox-static are downloaded and unpacked, not
# installed; isolinux, extlinux, e2fsprogs, fdisk come from the host):
#   OUTDIR/installer.iso  boots (isolinux, 1 s prompt) into imgvm=install
#   OUTDIR/installer-reboot.iso  the same, but the guest reboots after
#                         INSTALL-OK instead of powering off (for a one-run
#                         install + eject + disk boot)
#   OUTDIR/bench.iso      the same ISO, default imgvm=bench
#   OUTDIR/diag.iso       the same ISO, default imgvm=diag
#   OUTDIR/copy.iso       the same ISO, default imgvm=copy
#   OUTDIR/net.iso        the same ISO, default imgvm=net (virtio-net)
#   OUTDIR/netbench.iso   the same ISO, default imgvm=netbench
#   OUTDIR/tablet.iso     the same ISO, default imgvm=tablet (USB tablet)
#   OUTDIR/vmlinuz OUTDIR/initrd.gz OUTDIR/marker.gz
#   OUTDIR/guest.env      MARKER_SHA256=, MARKER_BYTES=, WRITE_SHA256=, KVER=
#   OUTDIR/fiobench.iso   only with ISO_FIO=1: default imgvm=fio, the same
#                         initramfs plus the host's fio and its libraries
# Other labels at the boot prompt: install, disk, bench, copy, diag, net,
# tablet, shell.
#
# Env: IMGVM_GUEST_CACHE  unpacked packages, build tree (default OUTDIR/.cache)
#      IMGVM_DEB_CACHE    downloaded .debs (default ~/.cache/imgvm/debs: outside
#                         /tmp, so the nested test host sees them offline)
#      ISO_SERIAL=1       isolinux drives the serial port itself (SERIAL 0);
#                         by default its prompt reaches the serial console
#                         only through the firmware (SeaBIOS sercon)
#      KPKG=linux-image-6.1.0-NN-amd64  kernel package (default: the one
#                         linux-image-amd64 depends on, or one in a cache)
#      ISO_FIO=1          also OUTDIR/fiobench.iso (make bench).  fio and the
#                         libraries it links (about 80 MiB) go into an
#                         initramfs of their own, appended to the usual one,
#                         so the ISOs of make check stay small
# A second run with the same inputs only checks the stamp (well under 1 s).
set -euo pipefail
out=${1:?usage: build-test-iso.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache=${IMGVM_GUEST_CACHE:-$out/.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
log() { echo "build-test-iso: $*" >&2; }
# set -e ends the build silently; say where (-E: in functions too)
set -E
trap 'log "line $LINENO failed (status $?): $BASH_COMMAND"' ERR

need=""
for tool in xorriso:xorriso mke2fs:e2fsprogs sfdisk:fdisk extlinux:extlinux cpio:cpio modprobe:kmod; do
	command -v "${tool%%:*}" >/dev/null 2>&1 || need="$need ${tool#*:}"
done
[ -e /usr/lib/ISOLINUX/isolinux.bin ] || need="$need isolinux"
[ -e /usr/lib/syslinux/mbr/mbr.bin ] || need="$need syslinux-common"
if [ -n "$need" ]; then
	log "missing host packages:$need (make deps installs them)"
	exit 1
fi

# ---- Debian packages: kernel and busybox --------------------------------
# Downloads go to a per-user cache outside /tmp, so that the nested test
# host (which sees the host's / read-only, with no network) finds them too.
# A .deb already in any of these directories is reused.
debs=${IMGVM_DEB_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/imgvm/debs}
mkdir -p "$debs" 2>/dev/null && [ -w "$debs" ] || debs=$cache
deb_dirs=("$debs" "$cache" "${NESTED_KVM_CACHE:-/tmp/imgvm-nested-kvm}" /tmp/nested-kvm-cache /tmp/imgvm-guest/.cache)
find_deb() { # package -> path of a cached .deb, if any
	local d f
	for d in "${deb_dirs[@]}"; do
		for f in "$d/$1"_*.deb; do
			[ -e "$f" ] && { echo "$f"; return 0; }
		done
	done
	return 1
}
unpack() { # package -> unpacked tree
	local pkg=$1 tree=$cache/tree-$1 deb
	if [ ! -e "$tree/.done" ]; then
		deb=$(find_deb "$pkg") || {
			log "apt-get download $pkg"
			(cd "$debs" && apt-get download -q "$pkg" >/dev/null) || { log "cannot download $pkg"; exit 1; }
			deb=$(find_deb "$pkg")
		}
		# keep a copy where the nested test host can see it
		[ "$(dirname "$deb")" = "$debs" ] || cp "$deb" "$debs/" 2>/dev/null || true
		rm -rf "$tree"
		mkdir -p "$tree"
		dpkg-deb -x "$deb" "$tree"
		touch "$tree/.done"
	fi
	echo "$tree"
}
# the package resolved last time (apt-cache takes seconds)
[ -n "${KPKG:-}" ] || KPKG=$(cat "$cache/kernel-package" "$debs/kernel-package" 2>/dev/null | head -n1 || true)
if [ -z "${KPKG:-}" ]; then
	KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
fi
if [ -z "${KPKG:-}" ]; then
	f=$(ls "${deb_dirs[@]}" 2>/dev/null | grep -o '^linux-image-[0-9][^_]*-amd64' | sort -V | tail -n1 || true)
	KPKG=$f
fi
[ -n "$KPKG" ] || { log "no kernel package known (apt-get update?)"; exit 1; }
echo "$KPKG" >"$cache/kernel-package"
echo "$KPKG" >"$debs/kernel-package" 2>/dev/null || true

# program_libs PATH: the libraries ldd lists for PATH and the dynamic loader
program_libs() { ldd "$1" | awk '$2 == "=>" { print $3 } $1 ~ /^\// { print $1 }'; }
# program at host path $1 into $root at path $2, with its libraries
add_program() {
	local lib
	mkdir -p "$root$(dirname "$2")"
	cp -L "$1" "$root$2"
	for lib in $(program_libs "$1"); do
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}
iso_image() { # tree, output
	if ! xorriso -as mkisofs -quiet -V IMGVM_TEST -R -J -o "$2.new" \
		-b isolinux/isolinux.bin -c isolinux/boot.cat \
		-no-emul-boot -boot-load-size 4 -boot-info-table "$1" 2>"$2.err"; then
		log "xorriso could not write $2: $(tail -3 "$2.err")"
		return 1
	fi
	rm -f "$2.err"
	mv "$2.new" "$2"
}

# Every label's kernel command line.  quiet: every console byte costs the
# guest two port exits (about 0.4 ms in the nested test host), and Linux's
# 25-30 KB of boot messages about 10 s a boot; /init prints what the tests
# read, and the kernel's log on a failure.
cmdline="initrd=/boot/initrd.gz console=ttyS0,115200 quiet panic=1"

# ---- fiobench.iso (ISO_FIO=1) -------------------------------------------
# Made from this script's own output (vmlinuz, initrd.gz, guest.env): the
# kernel unpacks concatenated compressed cpio archives one after another,
# so fio's archive is appended to initrd.gz.  Its stamp adds fio's and its
# libraries' sizes and times, so a package upgrade rebuilds it.
fio_iso() {
	local fio fstamp kver lib fiso
	fio=$(command -v fio) || { log "ISO_FIO=1: fio missing on the host (make deps installs it)"; exit 1; }
	fstamp=$(cat "$out/.stamp")-$({ echo "$fio"; program_libs "$fio"; } |
		while read -r lib; do stat -L -c '%n %s %Y' "$lib"; done | sha256sum | cut -c1-16)
	if [ "$(cat "$out/.stamp-fio" 2>/dev/null)" = "$fstamp" ] && [ -e "$out/fiobench.iso" ]; then
		log "up to date: $out/fiobench.iso"
		return 0
	fi
	kver=$(sed -n 's/^KVER=//p' "$out/guest.env")
	root=$cache/fio/initramfs
	fiso=$cache/fio/iso
	rm -rf "$cache/fio"
	mkdir -p "$root" "$fiso/isolinux" "$fiso/boot"
	add_program "$fio" /usr/bin/fio
	(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6n >"$cache/fio/fio.gz"
	cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$fiso/isolinux/"
	cp "$out/vmlinuz" "$fiso/boot/vmlinuz"
	cat "$out/initrd.gz" "$cache/fio/fio.gz" >"$fiso/boot/initrd.gz"
	{
		[ "${ISO_SERIAL:-0}" = 1 ] && echo "SERIAL 0 115200"
		echo "DEFAULT fio"
		echo "PROMPT 1"
		echo "TIMEOUT 10"
		echo "SAY imgvm test guest with fio, Linux $kver. Labels: fio shell (default fio)"
		for label in fio shell; do
			echo "LABEL $label"
			echo "  KERNEL /boot/vmlinuz"
			echo "  APPEND $cmdline imgvm=$label"
		done
	} >"$fiso/isolinux/isolinux.cfg"
	iso_image "$fiso" "$out/fiobench.iso"
	rm -rf "$root"
	echo "$fstamp" >"$out/.stamp-fio"
	log "built $out/fiobench.iso ($(du -h "$out/fiobench.iso" | cut -f1))"
}

stamp=$(cat "$0" "$here/init.sh" | sha256sum | cut -c1-16)-$KPKG-${ISO_SERIAL:-0}
if [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ] &&
	[ -e "$out/installer.iso" ] && [ -e "$out/installer-reboot.iso" ] &&
	[ -e "$out/installer-wait.iso" ] &&
	[ -e "$out/bench.iso" ] && [ -e "$out/diag.iso" ] && [ -e "$out/copy.iso" ] &&
	[ -e "$out/net.iso" ] && [ -e "$out/netbench.iso" ] && [ -e "$out/tablet.iso" ]; then
	log "up to date: $out"
	[ "${ISO_FIO:-0}" = 1 ] && fio_iso
	exit 0
fi

ktree=$(unpack "$KPKG")
btree=$(unpack busybox-static)
kver=$(ls "$ktree/lib/modules" | head -n1)
[ -e "$ktree/lib/modules/$kver/modules.dep" ] || depmod -b "$ktree" "$kver"

# ---- the marker: 8 MiB of numbered 64-byte lines, known sha256 ----------
marker_bytes=8388608
if [ ! -e "$cache/marker.gz" ]; then
	awk 'BEGIN { for (n = 0; n < 131072; n++) {
		line = sprintf("imgvm test marker, line %07d of 131072, sector %05d ", n, int(n / 8));
		while (length(line) < 63) line = line "-";
		print line } }' | gzip -9n >"$cache/marker.gz.new"
	mv "$cache/marker.gz.new" "$cache/marker.gz"
fi
marker_sha256=$(zcat "$cache/marker.gz" | sha256sum | cut -d' ' -f1)
[ "$(zcat "$cache/marker.gz" | wc -c)" = $marker_bytes ] || { log "marker has the wrong size"; exit 1; }
write_sha256=$(awk 'BEGIN { for (i = 0; i < 2048; i++) print "imgvm guest write, 32 bytes/ln" }' | sha256sum | cut -d' ' -f1)

# ---- initramfs ----------------------------------------------------------
work=$cache/build
rm -rf "$work"
root=$work/initramfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,cdrom,usr/lib/syslinux,lib/modules/"$kver"}
cp "$btree/bin/busybox" "$root/bin/"
for applet in $("$root/bin/busybox" --list); do
	[ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
# modules and their dependencies, in load order; soft dependencies of the
# crc users (ext4, sd_mod) first
order=$root/lib/modules/$kver/modules.order.imgvm
: >"$order"
for m in crc32c_generic crct10dif_generic crc64_rocksoft_generic ahci sd_mod sr_mod isofs ext4 vfat nls_cp437 nls_ascii nls_iso8859-1 nls_utf8 button evdev virtio_pci virtio_net uhci_hcd usbhid hid_generic; do
	modprobe -d "$ktree" -S "$kver" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" { print $2 }' |
		while read -r file; do
			rel=${file#"$ktree/lib/modules/$kver/"}
			grep -qxF "$rel" "$order" && continue
			mkdir -p "$root/lib/modules/$kver/$(dirname "$rel")"
			cp "$file" "$root/lib/modules/$kver/$rel"
			echo "$rel" >>"$order"
		done
done
# host tools busybox lacks (ext4 mke2fs, sfdisk, extlinux) and their libraries
# busybox runs its own applets before PATH: init.sh calls these by path
add_program "$(command -v mke2fs)" /usr/sbin/mke2fs
add_program "$(command -v sfdisk)" /usr/sbin/sfdisk
add_program "$(command -v extlinux)" /usr/bin/extlinux
[ -e /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/"
cp /usr/lib/syslinux/mbr/mbr.bin "$root/usr/lib/syslinux/mbr.bin"
sed -e "s/@MARKER_SHA256@/$marker_sha256/" -e "s/@MARKER_BYTES@/$marker_bytes/" \
	-e "s/@WRITE_SHA256@/$write_sha256/" -e "s/@KVER@/$kver/" "$here/init.sh" >"$root/init"
chmod 755 "$root/init"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n >"$work/initrd.gz"

# ---- ISOs ---------------------------------------------------------------
iso=$work/iso
mkdir -p "$iso/isolinux" "$iso/boot"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/isolinux/"
cp "$ktree/boot/vmlinuz-$kver" "$iso/boot/vmlinuz"
cp "$work/initrd.gz" "$iso/boot/initrd.gz"
cp "$cache/marker.gz" "$iso/marker.gz"
isolinux_cfg() { # default label
	[ "${ISO_SERIAL:-0}" = 1 ] && echo "SERIAL 0 115200"
	echo "DEFAULT $1"
	echo "PROMPT 1"
	echo "TIMEOUT 10"
	echo "SAY imgvm test guest, Linux $kver. Labels: install install-reboot install-wait disk bench copy diag net netbench tablet shell (default $1)"
	for label in install disk bench copy diag net netbench tablet shell; do
		echo "LABEL $label"
		echo "  KERNEL /boot/vmlinuz"
		echo "  APPEND $cmdline imgvm=$label"
	done
	echo "LABEL install-reboot"
	echo "  KERNEL /boot/vmlinuz"
	echo "  APPEND $cmdline imgvm=install imgvm.after=reboot"
	echo "LABEL install-wait"
	echo "  KERNEL /boot/vmlinuz"
	echo "  APPEND $cmdline imgvm=install imgvm.after=wait"
}
make_iso() { # default label, output
	isolinux_cfg "$1" >"$iso/isolinux/isolinux.cfg"
	iso_image "$iso" "$2"
}
make_iso install "$out/installer.iso"
make_iso install-reboot "$out/installer-reboot.iso"
make_iso install-wait "$out/installer-wait.iso"
make_iso bench "$out/bench.iso"
make_iso diag "$out/diag.iso"
make_iso copy "$out/copy.iso"
make_iso net "$out/net.iso"
make_iso netbench "$out/netbench.iso"
make_iso tablet "$out/tablet.iso"
cp "$iso/boot/vmlinuz" "$work/initrd.gz" "$cache/marker.gz" "$out/"
cat >"$out/guest.env" <<EOF
KPKG=$KPKG
KVER=$kver
MARKER_SHA256=$marker_sha256
MARKER_BYTES=$marker_bytes
WRITE_SHA256=$write_sha256
EOF
echo "$stamp" >"$out/.stamp"
log "built $out: installer.iso installer-reboot.iso installer-wait.iso bench.iso diag.iso copy.iso net.iso netbench.iso tablet.iso ($(du -h "$out/installer.iso" | cut -f1)), Linux $kver"
[ "${ISO_FIO:-0}" = 1 ] && fio_iso
exit 0
