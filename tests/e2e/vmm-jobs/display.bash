# shellcheck shell=bash
# Guest cases of the screen (vmm/devices/vga.c, vmm/display/): the standard
# VGA with SeaBIOS's VGA BIOS, screenshots and text dumps, VNC with
# libvncclient as the viewer (tests/helpers/vnc_client), and QEMU's
# screendump of the same screen as the reference (tests/helpers/
# vnc_imgdiff, less than 2 % of the pixels may differ).  Sourced by
# tests/e2e/vmm.sh; five imgvm runs (one in a window on Xvfb) and two QEMU
# runs, on the host.

DISPLAY_HELPERS=$ROOT/$B/tests/helpers
# VNC's UNIX sockets cannot live on the nested host's 9p work directories
display_socket_dir() {
	[ -n "${DISPLAY_SOCKETS:-}" ] || DISPLAY_SOCKETS=$(mktemp -d /tmp/imgvm-display.XXXXXX)
	echo "$DISPLAY_SOCKETS"
}
VMM_EXTRA_JOBS+=("display_bios" "display_grub" "display_installer")
# the install of vdi_install and the reboot of onerun_vhd, with a VGA
[ -n "$REPEATS" ] && VMM_EXTRA_JOBS+=("display_install")
# The SDL window in a guest run only with VMM_E2E_FULL=1: in its first two
# runs in the nested host the key check and the close check each failed
# once (the window's focus and close under TCG's timing), and the retries
# added since have not run yet.  tests/unit/test_vmm_display.c checks the
# window's pixels, keys, mouse and close on an Xvfb without a guest.
[ -z "$FULL" ] || VMM_EXTRA_JOBS+=("display_sdl")
VMM_EXTRA_HOST+=(display_host_cases)

# Command line only: the options are documented and bad values refused.
display_host_cases() {
	local help o missing=
	help=$("$IMGVM" --help 2>&1)
	for o in --vga --vram --display --vnc --vnc-password-file --screenshot --screenshot-on-exit; do
		grep -q -- "$o" <<<"$help" || missing="$missing $o"
	done
	check "imgvm --help documents the display options${missing:+ (missing:$missing)}" test -z "$missing"
	bad_option "bad --vram" "vram" boot --vram 3M
	bad_option "bad --display" "display" boot --display sdl3
	bad_option "bad --vnc address" "vnc" boot --vnc nowhere --no-reboot
	bad_option "--vnc-password-file without --vnc" "needs --vnc" boot --vnc-password-file /dev/null
	if ldd "$IMGVM" 2>/dev/null | grep -q libSDL2; then
		# built with SDL2: with no X server to open a window on, one line
		# (SDL would try its other drivers, Wayland or KMS, otherwise)
		if [ ! -e /sys/module/kvm_pvm ] && hardware_kvm; then
			DISPLAY= SDL_VIDEODRIVER=x11 bad_option "--display sdl without an X server" "display sdl" \
				boot --display sdl --no-reboot --timeout 5
		fi
	else
		bad_option "--display sdl in an imgvm built without SDL2" "without SDL2" boot --display sdl
	fi
}

# snap PID PNG: a screenshot now (SIGUSR2); the text dump, in text modes,
# is PNG's name with .txt
snap() {
	local pid=$1 png=$2 _
	rm -f "$png" "${png%.png}.txt"
	kill -USR2 "$pid" 2>/dev/null || return 1
	for _ in $(seq 50); do
		[ -e "$png" ] && return 0
		sleep 0.1
	done
	return 1
}

png_size() { # PNG: WIDTHxHEIGHT from the IHDR chunk
	python3 -c 'import struct,sys; d=open(sys.argv[1],"rb").read(24); print("%dx%d" % struct.unpack(">II", d[16:24]))' "$1" 2>/dev/null
}

# wait_ready PID SOCKET: imgvm has set up its machine (the VNC socket
# exists), so it takes SIGUSR2 instead of dying of it
wait_ready() {
	local _
	for _ in $(seq 300); do
		[ -S "$2" ] && return 0
		kill -0 "$1" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# wait_text PID PNG PATTERN SECONDS: until the text screen shows PATTERN
wait_text() {
	local pid=$1 png=$2 pattern=$3 end=$((SECONDS + $4))
	while [ $SECONDS -lt $end ]; do
		kill -0 "$pid" 2>/dev/null || return 1
		snap "$pid" "$png" && grep -qF -- "$pattern" "${png%.png}.txt" 2>/dev/null && return 0
		sleep 1
	done
	return 1
}

# wait_size PID PNG SIZE SECONDS: until the screen has that size
wait_size() {
	local pid=$1 png=$2 size=$3 end=$((SECONDS + $4))
	while [ $SECONDS -lt $end ]; do
		kill -0 "$pid" 2>/dev/null || return 1
		snap "$pid" "$png" && [ "$(png_size "$png")" = "$size" ] && return 0
		sleep 1
	done
	return 1
}

# wait_stable PID PNG SECONDS [SIZE]: until two screenshots two seconds
# apart show the same screen (of that size): a boot menu whose text has
# appeared may still be being drawn (GRUB writes its help text before its
# entries, and the nested test host draws slowly), and a half-drawn menu is
# not what QEMU shows.  The size, because a boot loader may leave its
# graphics mode for text mode while it loads its next part, and that blank
# screen can stand still for seconds (isolinux between its first VBE
# screen and vesamenu's menu).
wait_stable() {
	local pid=$1 png=$2 end=$((SECONDS + $3)) size=${4:-} prev=${2%.png}.prev.png still=1
	snap "$pid" "$png" || return 1
	while [ $still != 0 ] && [ $SECONDS -lt $end ]; do
		sleep 2
		cp "$png" "$prev"
		snap "$pid" "$png" || break
		"$DISPLAY_HELPERS/vnc_imgdiff" "$prev" "$png" 0.01 >/dev/null 2>&1 &&
			{ [ -z "$size" ] || [ "$(png_size "$png")" = "$size" ]; } && still=0
	done
	rm -f "$prev"
	return $still
}

stop_vm() { # PID: SIGTERM, and its status
	kill -TERM "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# QEMU's screens, the reference (-vga std, the same firmware): QEMU boots
# each ISO on the host while the nested host boots and runs the jobs before
# the display jobs.  Inside the nested host its two boots took 90-115 s of
# its one CPU; on the host they overlap it.  (TCG here, KVM on hardware:
# the screen is the same.)  Started by prepare, detached, so that the job
# runner's waits never see them.
VMM_EXTRA_PREPARE+=(display_prepare)
GRUB_ISO=/usr/lib/grub-rescue/grub-rescue-cdrom.iso
display_prepare() {
	local dir=$PREP/qemu-ref
	rm -rf "$dir"
	mkdir -p "$dir"
	command -v qemu-system-x86_64 >/dev/null || return 0
	[ -e "$GRUB_ISO" ] && (qemu_reference "$GRUB_ISO" display-grub </dev/null >/dev/null 2>&1 &)
	[ -e "$PREP/di-mini.iso" ] &&
		(qemu_reference "$PREP/di-mini.iso" display-di-menu </dev/null >/dev/null 2>&1 &)
	return 0
}

# qemu_reference ISO NAME: QEMU boots ISO; its screendump every second,
# each new screen kept as NAME-N.png, until the screen stood still for 10 s
# (a text-mode screen with a blinking cursor never does: a menu hides it).
# Then NAME.done holds N; or NAME.failed says why.
qemu_reference() {
	local iso=$1 name=$2 dir=$PREP/qemu-ref accel=tcg pid n=0 same=0 end=$((SECONDS + 300))
	local mon=$dir/$name.mon now=$dir/$name.now.png
	hardware_kvm && accel=kvm
	timeout -k 5 330 qemu-system-x86_64 -accel $accel -M pc -m 1024 -vga std -display none \
		-nic none -cdrom "$iso" -serial none -monitor "unix:$mon,server,nowait" \
		</dev/null >"$dir/$name.out" 2>&1 &
	pid=$!
	while [ $same -lt 10 ] && [ $SECONDS -lt $end ] && kill -0 $pid 2>/dev/null; do
		sleep 1
		rm -f "$now"
		python3 - "$mon" "$now" <<-'EOF' 2>/dev/null
			import socket, sys, time
			s = socket.socket(socket.AF_UNIX)
			s.connect(sys.argv[1])
			s.settimeout(5)
			s.sendall(("screendump %s -f png\n" % sys.argv[2]).encode())
			for _ in range(50):
			    time.sleep(0.1)
			    try:
			        if open(sys.argv[2], "rb").read()[-8:-4] == b"IEND":
			            break
			    except OSError:
			        pass
			s.close()
		EOF
		[ -s "$now" ] || continue
		if [ $n -gt 0 ] && cmp -s "$now" "$dir/$name-$n.png"; then
			same=$((same + 1))
		else
			same=0
			n=$((n + 1))
			mv "$now" "$dir/$name-$n.png"
		fi
	done
	kill $pid 2>/dev/null
	wait $pid 2>/dev/null
	rm -f "$now" "$mon"
	if [ $same -ge 10 ]; then
		echo $n >"$dir/$name.done"
	else
		echo "QEMU's screen did not stand still for 10 s within 300 s ($n screens; $(tail -c 200 "$dir/$name.out"))" >"$dir/$name.failed"
	fi
}

# qemu_matches OURS.png NAME SECONDS: OURS differs from one of QEMU's
# screens (the last, still one first) in less than 2 % of the pixels; the
# host's QEMU may still be at it for up to SECONDS.
qemu_matches() {
	local ours=$1 name=$2 dir=$PREP/qemu-ref end=$((SECONDS + $3)) n out='' i
	if ! command -v qemu-system-x86_64 >/dev/null; then
		echo "skip - $name against QEMU: qemu-system-x86_64 not installed"
		return 0
	fi
	while [ ! -e "$dir/$name.done" ] && [ ! -e "$dir/$name.failed" ] && [ $SECONDS -lt $end ]; do
		sleep 2
	done
	if [ ! -e "$dir/$name.done" ]; then
		fail "$name: no screen from QEMU on the host: $(cat "$dir/$name.failed" 2>/dev/null || echo "not ready within $3 s")"
		return 1
	fi
	n=$(cat "$dir/$name.done")
	for ((i = n; i > 0; i--)); do
		out=$("$DISPLAY_HELPERS/vnc_imgdiff" "$ours" "$dir/$name-$i.png" 2) && break
		out=
	done
	cp "$dir/$name-$n.png" "$T/$name-qemu.png" 2>/dev/null
	if [ -n "$out" ]; then
		ok "$name: the same screen as QEMU -vga std ($out, screen $i of QEMU's $n)"
	else
		fail "$name: never within 2 % of QEMU's screens ($("$DISPLAY_HELPERS/vnc_imgdiff" "$ours" "$dir/$name-$n.png" 2 2>&1)) [ours: $(log_path "$ours"), QEMU's last: $(log_path "$T/$name-qemu.png")]"
	fi
}

# The empty machine with a VGA: SeaBIOS's screen in VGA text mode, read
# back from the text dump of --screenshot-on-exit; the serial console
# still mirrors it.
job_display_bios() {
	local log=$T/display-bios.log png=$T/display-bios.png
	TIMEOUT=150 run_vm "$log" --no-reboot --vga std --screenshot-on-exit "$png"
	if [ "$RC" = 0 ] && grep -q 'SeaBIOS (version' "${png%.png}.txt" 2>/dev/null &&
		grep -q 'No bootable device' "${png%.png}.txt" && [ "$(png_size "$png")" = 720x400 ]; then
		ok "SeaBIOS's boot screen in VGA text mode (720x400 PNG; the text dump has its banner and 'No bootable device')"
	else
		fail "SeaBIOS screen (rc=$RC, $(png_size "$png")): $(head -c 300 "${png%.png}.txt" 2>/dev/null) $(cat "$log.err")"
	fi
	if grep -qa 'SeaBIOS (version' "$log"; then
		ok "with a VGA present the serial console still shows SeaBIOS"
	else
		fail "serial console with a VGA: $(tail_log "$log")"
	fi
}

# GRUB's rescue CD: its menu on the screen; over VNC (a UNIX socket) 'c'
# opens GRUB's command line and "ls" lists the CD-ROM; QEMU shows the same
# menu screen.  (GRUB calls the BIOS CD drive "(cd)".)
job_display_grub() {
	local iso=/usr/lib/grub-rescue/grub-rescue-cdrom.iso log=$T/display-grub.log
	local png=$T/display-grub.png sock pid
	sock=$(display_socket_dir)/grub.vnc
	if [ ! -e "$iso" ]; then
		echo "skip - display_grub: $iso not found (make deps installs it)"
		return 0
	fi
	"$IMGVM" boot --serial "file:$log" --memory 1G --cdrom "$iso" --vnc "unix:$sock" \
		--screenshot "$png" --timeout "$TIMEOUT" </dev/null 2>"$log.err" &
	pid=$!
	if ! wait_ready $pid "$sock" || ! wait_text $pid "$png" 'Press enter to boot the selected OS' 150; then
		fail "GRUB's menu on the VGA screen: $(head -c 300 "${png%.png}.txt" 2>/dev/null) $(cat "$log.err")"
		stop_vm $pid
		return 1
	fi
	if ! wait_stable $pid "$png" 60; then
		fail "GRUB's menu never stood still for 2 s within 60 s: $(cat "$log.err")"
		stop_vm $pid
		return 1
	fi
	ok "GRUB rescue CD: its menu in the text dump"
	cp "$png" "$T/display-grub-menu.png"
	if "$DISPLAY_HELPERS/vnc_client" "$sock" type:c wait:1000 >"$T/display-grub.vnc.out" 2>&1 &&
		wait_text $pid "$png" 'grub>' 30 &&
		"$DISPLAY_HELPERS/vnc_client" "$sock" type:'ls\n' wait:500 >>"$T/display-grub.vnc.out" 2>&1 &&
		wait_text $pid "$png" '(cd)' 30; then
		ok "'c' and 'ls' typed through a VNC viewer: GRUB's command line lists the CD-ROM, (cd)"
	else
		fail "GRUB over VNC: $(cat "$T/display-grub.vnc.out") $(head -c 400 "${png%.png}.txt" 2>/dev/null)"
	fi
	stop_vm $pid
	qemu_matches "$T/display-grub-menu.png" display-grub 120
}

# Debian's installer: the isolinux graphical menu (VBE, 640x480), then over
# VNC Tab, a text-mode kernel command line and Enter; "Select a language"
# appears on the VGA console (the text dump), not on the serial one.
job_display_installer() {
	local iso=$PREP/di-mini.iso log=$T/display-di.log png=$T/display-di.png
	local sock pid
	sock=$(display_socket_dir)/di.vnc
	if [ ! -e "$iso" ]; then
		echo "skip - display_installer: no di-mini.iso (debian-installer-12-netboot-amd64, isolinux or xorriso missing)"
		return 0
	fi
	"$IMGVM" boot --serial "file:$log" --memory 1G --cdrom "$iso" --vnc "unix:$sock" \
		--screenshot "$png" --timeout "$TIMEOUT" </dev/null 2>"$log.err" &
	pid=$!
	if ! wait_ready $pid "$sock" || ! wait_size $pid "$png" 640x480 150; then
		fail "Debian installer's graphical menu: screen $(png_size "$png"); $(cat "$log.err")"
		stop_vm $pid
		return 1
	fi
	if ! wait_stable $pid "$png" 60 640x480; then
		fail "the Debian installer's menu never stood still for 2 s within 60 s: screen $(png_size "$png"); $(cat "$log.err")"
		stop_vm $pid
		return 1
	fi
	cp "$png" "$T/display-di-menu.png"
	ok "Debian installer: isolinux's graphical boot menu (VBE 640x480, no text dump: $([ -e "${png%.png}.txt" ] && echo present || echo none))"
	if "$DISPLAY_HELPERS/vnc_client" "$sock" key:Tab wait:1000 type:' vga=normal nomodeset' \
		key:Return >"$T/display-di.vnc.out" 2>&1 &&
		wait_text $pid "$png" 'Select a language' 240; then
		ok "Enter over VNC starts the installer: 'Select a language' on the VGA console (text dump)"
		if grep -qa 'Select a language' "$log"; then
			fail "the installer also wrote its screen to the serial console"
		else
			ok "... and not on the serial console"
		fi
	else
		fail "installer over VNC: $(cat "$T/display-di.vnc.out") $(head -c 400 "${png%.png}.txt" 2>/dev/null) $(png_size "$png")"
	fi
	stop_vm $pid
	qemu_matches "$T/display-di-menu.png" display-di-menu 150
}

# The project's test guest installs onto a fresh VDI and boots it in one
# run with the VGA present (the serial console drives it as before).
job_display_install() {
	local log=$T/display-install.log disk=$T/display-new.vdi png=$T/display-install.png
	if [ ! -e "$PREP/ready" ]; then
		echo "skip - display_install: $(cat "$PREP/why" 2>/dev/null)"
		return 0
	fi
	if ! "$IMGTOOL" create -q -f vdi "$disk" 512M 2>"$log.create"; then
		fail "imgtool create for the VGA install: $(cat "$log.create")"
		return 1
	fi
	run_vm "$log" --cdrom "$GUEST/installer-reboot.iso" --disk "$disk" --eject-on-reboot \
		--vga std --screenshot-on-exit "$png"
	if [ "$RC" = 0 ] && grep -qa 'INSTALL-OK' "$log" && grep -qa 'MARKER-OK' "$log" &&
		[ -s "$png" ]; then
		ok "with the VGA present the test guest installs, reboots and boots from its disk (MARKER-OK)"
	else
		fail "install with a VGA (rc=$RC): $(tail_log "$log")"
	fi
	rm -f "$disk"
}

# --display sdl on a virtual X server (Xvfb): GRUB's menu in the window
# (xwd, converted by ImageMagick) is the picture of imgvm's own
# --screenshot; 'c' typed on the X keyboard
# (xdotool) opens GRUB's command line; closing the window stops a guest
# that does not listen for the power button (GRUB), and imgvm exits.
job_display_sdl() {
	local iso=/usr/lib/grub-rescue/grub-rescue-cdrom.iso log=$T/display-sdl.log
	local png=$T/display-sdl.png win=$T/display-sdl-window.png pid xpid xfd display window _ out
	if ! ldd "$IMGVM" 2>/dev/null | grep -q libSDL2; then
		echo "skip - display_sdl: imgvm was built without SDL2 (libsdl2-dev)"
		return 0
	fi
	for tool in Xvfb xdotool xwd convert python3; do
		command -v $tool >/dev/null || {
			echo "skip - display_sdl: $tool missing (scripts/deps.sh installs xvfb, xdotool, imagemagick)"
			return 0
		}
	done
	[ -e "$iso" ] || { echo "skip - display_sdl: $iso not found"; return 0; }
	xfd=$(mktemp /tmp/imgvm-xvfb.XXXXXX)
	Xvfb -displayfd 3 -screen 0 1024x768x24 -nolisten tcp 3>"$xfd" 2>/dev/null &
	xpid=$!
	for _ in $(seq 100); do [ -s "$xfd" ] && break; sleep 0.1; done
	display=:$(head -1 "$xfd")
	rm -f "$xfd"
	for _ in $(seq 50); do
		DISPLAY=$display timeout 5 xdotool getdisplaygeometry >/dev/null 2>&1 && break
		sleep 0.1
	done
	DISPLAY=$display SDL_VIDEODRIVER=x11 "$IMGVM" boot --serial "file:$log" --memory 1G --cdrom "$iso" \
		--display sdl --screenshot "$png" --timeout "$TIMEOUT" </dev/null 2>"$log.err" &
	pid=$!
	window=
	for _ in $(seq 300); do
		window=$(DISPLAY=$display timeout 10 xdotool search --onlyvisible --name '^imgvm$' 2>/dev/null | head -1)
		[ -n "$window" ] && break
		kill -0 $pid 2>/dev/null || break
		sleep 0.1
	done
	if [ -z "$window" ] || ! wait_text $pid "$png" 'Press enter to boot the selected OS' 150; then
		fail "--display sdl: no window or no GRUB menu ($(cat "$log.err"))"
		stop_vm $pid
		kill $xpid
		return 1
	fi
	ok "--display sdl: a window titled 'imgvm' on the X server, GRUB's menu on the screen"
	out=
	for _ in $(seq 5); do
		# (every X client under timeout: a stuck one must not hold the run)
		snap $pid "$png" && DISPLAY=$display timeout 15 xwd -silent -id "$window" -out "$win.xwd" &&
			timeout 15 convert "xwd:$win.xwd" "png:$win" 2>/dev/null &&
			out=$("$DISPLAY_HELPERS/vnc_imgdiff" "$png" "$win" 0.01) && break
		out=
		sleep 1
	done
	if [ -n "$out" ]; then
		ok "the SDL window shows the picture of imgvm's own --screenshot ($out)"
	else
		fail "SDL window against --screenshot: $("$DISPLAY_HELPERS/vnc_imgdiff" "$png" "$win" 0.01 2>&1)"
	fi
	# (a key that came before the window had the focus is pressed again)
	local typed=
	for _ in 1 2 3; do
		DISPLAY=$display timeout 10 xdotool windowfocus --sync "$window" key c 2>/dev/null &&
			wait_text $pid "$png" 'grub>' 10 && typed=1 && break
	done
	if [ -n "$typed" ]; then
		ok "'c' typed on the host's keyboard in the window opens GRUB's command line"
	else
		fail "keys through the SDL window: $(head -c 300 "${png%.png}.txt" 2>/dev/null)"
	fi
	# the window manager's close button: WM_DELETE_WINDOW
	local sent
	DISPLAY=$display timeout 60 python3 - "$window" <<-'EOF'
		import ctypes, sys
		x = ctypes.CDLL('libX11.so.6')
		x.XOpenDisplay.restype = ctypes.c_void_p
		x.XInternAtom.restype = ctypes.c_ulong
		x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
		x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
		x.XFlush.argtypes = [ctypes.c_void_p]
		d = x.XOpenDisplay(None)
		ev = (ctypes.c_long * 24)()
		ev[0] = 33  # ClientMessage
		ev[4] = int(sys.argv[1])
		ev[5] = x.XInternAtom(d, b'WM_PROTOCOLS', 0)
		ev[6] = 32
		ev[7] = x.XInternAtom(d, b'WM_DELETE_WINDOW', 0)
		x.XSendEvent(d, ev[4], 0, 0, ev)
		x.XFlush(d)
	EOF
	sent=$?
	for _ in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
	if kill -0 $pid 2>/dev/null; then
		fail "closing the SDL window did not stop a guest without ACPI (GRUB) in 30 s (the close message's sender: status $sent)"
		stop_vm $pid
	else
		wait $pid
		check "closing the window stops GRUB (no ACPI to hear the power button), imgvm exits 0" test $? = 0
	fi
	kill $xpid 2>/dev/null
	wait $xpid 2>/dev/null
}
