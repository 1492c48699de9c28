# shellcheck shell=bash
# Guest cases of the USB tablet (vmm/devices/uhci.c, usb_tablet.c) and of
# the control socket's screenshot and sendkeys, on the test guest's
# imgvm=tablet mode (tests/guest/init.sh): Linux's uhci_hcd, usbhid and
# hid-generic find the tablet, /proc/bus/input/devices lists it with
# absolute axes, and pointer events sent by a real VNC viewer
# (libvncclient, tests/helpers/vnc_client) arrive in /dev/input/eventN at
# exactly x * 0x7fff / (width - 1), y * 0x7fff / (height - 1) (rounded
# down).  `imgvm screenshot` writes the guest's VGA text console as PNG
# (the same pixels a VNC viewer gets) and text; `imgvm sendkeys` types a
# line the guest reads on that console's keyboard (tty1) and echoes to the
# serial console.  A second run with --pointer ps2 has no USB controller.
# Both runs report the boot's milestones and imgvm's idle CPU, for the
# record (never asserted).  Sourced by tests/e2e/vmm.sh; two imgvm runs.

VMM_EXTRA_JOBS+=("tablet")
VMM_EXTRA_HOST+=(tablet_host_cases)

tablet_host_cases() {
	check "imgvm --help documents --pointer" grep -q -- '--pointer tablet|ps2' <<<"$("$IMGVM" --help 2>&1)"
	bad_option "bad --pointer" "pointer" boot --pointer mouse
}

# tablet_await FILE TEXT SECONDS: TEXT (a fixed string) appears in FILE
tablet_await() {
	local end=$((SECONDS + $3))
	while [ $SECONDS -lt $end ]; do
		grep -qaF -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.5
	done
	return 1
}

# tablet_cpu PID SECONDS: the percentage of one CPU the process used
tablet_cpu() {
	local a b hz
	hz=$(getconf CLK_TCK)
	a=$(awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null) || return 1
	sleep "$2"
	b=$(awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null) || return 1
	awk -v a="$a" -v b="$b" -v hz="$hz" -v s="$2" 'BEGIN { printf "%.1f", (b - a) * 100 / hz / s }'
}

# tablet_milestones LOG PID START: seconds from START until SeaBIOS's
# banner, its "Booting from", and the guest's /init appear on the serial
# console (polled every 0.2 s)
tablet_milestones() {
	local log=$1 pid=$2 start=$3 bios=- booting=- init=- t end=$((SECONDS + 200))
	while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do
		t=$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')
		[ "$bios" = - ] && grep -qa 'SeaBIOS (version' "$log" 2>/dev/null && bios=$t
		[ "$booting" = - ] && grep -qa 'Booting from' "$log" 2>/dev/null && booting=$t
		if grep -qa 'guest\[' "$log" 2>/dev/null; then
			init=$t
			break
		fi
		sleep 0.2
	done
	echo "SeaBIOS banner ${bios} s, 'Booting from' ${booting} s, Linux /init ${init} s"
}

job_tablet() {
	local iso=$GUEST/tablet.iso dir log png ctl vsock pid start out size w h
	local ex ey marks_tablet marks_ps2 cpu_tablet cpu_ps2 rc=0
	if [ ! -e "$iso" ]; then
		echo "skip - tablet: no tablet.iso ($(cat "$PREP/why" 2>/dev/null))"
		return 0
	fi
	dir=$(display_socket_dir)
	log=$T/tablet.log
	png=$T/tablet.png
	ctl=$dir/tablet.ctl
	vsock=$dir/tablet.vnc
	start=$(date +%s.%N)
	"$IMGVM" boot --serial "file:$log" --memory 512M --cdrom "$iso" --vnc "unix:$vsock" \
		--control "$ctl" --firmware-log "$log.fw" --timeout "$TIMEOUT" </dev/null 2>"$log.err" &
	pid=$!
	marks_tablet=$(tablet_milestones "$log" $pid "$start")
	if ! tablet_await "$log" TABLET-READY 150; then
		fail "the guest never found the USB tablet: $(tail_log "$log")"
		stop_vm $pid
		return 1
	fi
	if grep -qaF 'N: Name="imgvm USB Tablet"' "$log" && grep -qaF 'B: ABS=3' "$log" &&
		grep -qaF 'I: Bus=0003 Vendor=0627 Product=0001' "$log"; then
		ok "the guest's Linux (uhci_hcd, usbhid, hid-generic) lists the USB tablet in /proc/bus/input/devices with absolute X and Y (B: ABS=3), $(grep -ao 'TABLET-READY event[0-9]*' "$log")"
	else
		fail "the tablet's input device: $(grep -a '  | ' "$log" | tr '\n' ' ')"
		rc=1
	fi

	# the screen: a PNG of the VGA text console, its text, and the same
	# pixels a viewer gets
	out=$("$IMGVM" screenshot "$ctl" "$png" 2>&1)
	size=$(png_size "$png")
	if [ -n "$size" ] && grep -qF 'IMGVM-TABLET-SCREEN: type a line here' "${png%.png}.txt" 2>/dev/null; then
		ok "imgvm screenshot: a ${size} PNG of the guest's VGA console, whose text dump has the line the guest wrote on tty1"
	else
		fail "imgvm screenshot ($out): size '$size', text: $(head -c 300 "${png%.png}.txt" 2>/dev/null)"
		rc=1
	fi
	w=${size%x*}
	h=${size#*x}
	[ -n "$w" ] && [ -n "$h" ] || { w=720 h=400; }
	if "$DISPLAY_HELPERS/vnc_client" "$vsock" wait:300 save:"$T/tablet-vnc.png" >"$T/tablet.vnc.out" 2>&1 &&
		out=$("$DISPLAY_HELPERS/vnc_imgdiff" "$png" "$T/tablet-vnc.png" 0.1 2>&1); then
		ok "the screenshot has the pixels a VNC viewer receives ($out)"
	else
		fail "screenshot against the VNC framebuffer: $out $(cat "$T/tablet.vnc.out")"
		rc=1
	fi

	# the pointer: three clicks through a VNC viewer, each position exact
	"$DISPLAY_HELPERS/vnc_client" "$vsock" click:360,200 wait:500 click:0,$((h - 1)) wait:500 \
		click:$((w - 1)),0 wait:500 >>"$T/tablet.vnc.out" 2>&1
	ex=$((360 * 32767 / (w - 1)))
	ey=$((200 * 32767 / (h - 1)))
	if tablet_await "$log" "TABLET-ABS x=$ex y=$ey" 30 &&
		tablet_await "$log" "TABLET-ABS x=0 y=32767" 10 &&
		tablet_await "$log" "TABLET-ABS x=32767 y=0" 10 &&
		grep -qaF 'TABLET-KEY code=272 value=1' "$log" && grep -qaF 'TABLET-KEY code=272 value=0' "$log"; then
		ok "VNC clicks at (360,200), (0,$((h - 1))), ($((w - 1)),0) of ${w}x${h} reach the guest's evdev as ABS_X/ABS_Y ($ex,$ey), (0,32767), (32767,0) and BTN_LEFT down/up"
	else
		fail "pointer over VNC: wanted x=$ex y=$ey; got $(grep -a 'TABLET-' "$log" | tr '\n' ' ') $(cat "$T/tablet.vnc.out")"
		rc=1
	fi

	# the keyboard of the VGA console
	out=$("$IMGVM" sendkeys "$ctl" 'Hello imgvm-42\n' 2>&1)
	if tablet_await "$log" 'TTY1-LINE[Hello imgvm-42]' 30; then
		ok "imgvm sendkeys 'Hello imgvm-42\\n': the guest read exactly that line on tty1 (the VGA console's keyboard)"
	else
		fail "sendkeys ($out): $(grep -a 'TTY1' "$log") $(tail_log "$log")"
		rc=1
	fi
	cpu_tablet=$(tablet_cpu $pid 10)
	stop_vm $pid

	# --pointer ps2: no USB controller at all (a repeat of the boot above
	# with another option: see REPEATS in vmm.sh)
	if [ -n "$REPEATS" ]; then
		log=$T/tablet-ps2.log
		start=$(date +%s.%N)
		"$IMGVM" boot --serial "file:$log" --memory 512M --cdrom "$iso" --vnc "unix:$vsock" \
			--pointer ps2 --firmware-log "$log.fw" --timeout "$TIMEOUT" </dev/null 2>"$log.err" &
		pid=$!
		marks_ps2=$(tablet_milestones "$log" $pid "$start")
		if tablet_await "$log" TABLET-NONE 150 && ! grep -qa 'UHCI' "$log.fw"; then
			ok "--pointer ps2: no USB controller (SeaBIOS finds no UHCI), the guest finds no absolute pointer"
		else
			fail "--pointer ps2: $(tail_log "$log")"
			rc=1
		fi
		cpu_ps2=$(tablet_cpu $pid 10)
		stop_vm $pid
	fi
	echo "# boot with the tablet: $marks_tablet; SeaBIOS: $(grep -a -m2 -iE 'uhci|usb' "$T/tablet.log.fw" | tr '\n' ' ')"
	[ -n "$REPEATS" ] && echo "# boot with --pointer ps2: $marks_ps2"
	echo "# imgvm's CPU over 10 s, guest idle at a shell loop: ${cpu_tablet:-?} % with the tablet (usbhid polling it), ${cpu_ps2:-?} % with --pointer ps2"
	return $rc
}
