# Sourced by bench/run.sh: the screen, imgvm --vnc against QEMU -vga std
# -vnc on the same KVM, with the Debian installer's graphical boot menu
# (isolinux vesamenu, VBE 640x480): the time from start to that menu's
# first frame (bench/display-first-screen.sh) and the CPU time while it
# sits idle with one VNC viewer (bench/display-idle.sh).  On hardware KVM
# directly, elsewhere inside the nested test host (one start for both).
display_cases() {
	local pats match=0 pat st row nested="" iso=$W/di-mini.iso tree
	tree=/usr/lib/debian-installer/images/12/amd64/text
	read -ra pats <<<"$CASES"
	[ ${#pats[@]} -eq 0 ] && match=1
	for pat in "${pats[@]}"; do [[ "display" == $pat ]] && match=1; done
	[ $match = 1 ] || return 0
	command -v qemu-system-x86_64 >/dev/null || { say "display: qemu-system-x86_64 missing, skipped"; return; }
	if [ ! -d "$tree/debian-installer" ] || [ ! -e /usr/lib/ISOLINUX/isolinux.bin ] ||
		! command -v xorriso >/dev/null; then
		say "display: debian-installer-12-netboot-amd64, isolinux or xorriso missing, skipped"
		return
	fi
	make -s -C "$TOP" "$B/tests/helpers/vnc_client" >/dev/null || return
	# the installer's menu ISO, as tests/e2e/vmm.sh builds it
	rm -rf "$W/di-tree"
	mkdir -p "$W/di-tree"
	cp -a "$tree/debian-installer" /usr/lib/ISOLINUX/isolinux.bin "$W/di-tree/"
	cp "$W/di-tree/debian-installer/amd64/boot-screens/ldlinux.c32" "$W/di-tree/"
	printf '%s\n' 'path debian-installer/amd64/boot-screens/' 'prompt 0' 'timeout 0' \
		'include debian-installer/amd64/boot-screens/menu.cfg' \
		'default debian-installer/amd64/boot-screens/vesamenu.c32' >"$W/di-tree/isolinux.cfg"
	xorriso -as mkisofs -quiet -o "$iso" -V ISOIMAGE -r -J -b isolinux.bin -c boot.cat \
		-no-emul-boot -boot-load-size 4 -boot-info-table "$W/di-tree" 2>/dev/null || {
		say "display: xorriso failed"
		return
	}
	rm -rf "$W/di-tree"
	if [ -e /sys/module/kvm_pvm ] || ! [ -w /dev/kvm ] ||
		! grep -qE 'vmx|svm' /proc/cpuinfo; then
		nested="$TOP/tests/nested-kvm.sh -t 2400 -w $W -w $TOP --"
	fi
	say "display: imgvm vs QEMU -vga std -vnc, $PAIRS pairs"
	$nested env BENCH_PAIRS="$PAIRS" B="$B" bash -c '
		bench/display-first-screen.sh "$1" docs/images/imgvm-debian-installer-menu.png &&
		bench/display-idle.sh "$1" 20 docs/images/imgvm-debian-installer-menu.png' display "$iso" >"$W/display.log" 2>&1
	st=$?
	if [ $st != 0 ]; then
		say "display: failed (exit $st); tail of $W/display.log:"
		tail -n 15 "$W/display.log" >&2
		FAILS+=("display: failed (exit $st), see $W/display.log")
		return
	fi
	row=$(awk '/^start to the installer/ { print "display: start to D-I graphical menu (s)|qemu-system -vga std -vnc|" $7 "|" $10 "|" $13 "|-|-|-" }' "$W/display.log")
	[ -n "$row" ] && ROWS+=("$row")
	row=$(awk '/^idle graphical screen/ { print "display: idle menu + 1 VNC viewer (CPU-s/s)|qemu-system -vga std -vnc|" $7 "|" $10 "|" $13 "|-|-|-" }' "$W/display.log")
	[ -n "$row" ] && ROWS+=("$row")
	grep -E '^(start to|idle graphical)' "$W/display.log" | sed 's/^/display: /' >&2
}
