# shellcheck shell=bash
# Guest cases of named VMs and the control socket (sourced by
# tests/e2e/vmm.sh): the seed's lab as a user runs it.  A VM is created
# with a new VDI and the installer ISO that waits for the host after
# INSTALL-OK; started detached; while it runs: status (byte counters that
# grow, the CD's medium), pause/resume, eject (the guest reports its
# CD-ROM lost the disc), powerbutton (the guest shuts down cleanly and
# imgvm ends); then started again without the CD, from the disk, to
# MARKER-OK; a snapshot taken before the install is reverted and the disk
# is blank again.

VMM_EXTRA_JOBS+=("control")

# control_json NAME COMMAND: the reply of imgvm COMMAND NAME --json
control_json() { "$IMGVM" "$2" "$1" --json 2>&1; }

# await_line FILE TEXT SECONDS: 0 once TEXT is in FILE
await_line() {
	local n=0
	while [ $n -lt $(($3 * 2)) ]; do
		grep -qa -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.5
		n=$((n + 1))
	done
	return 1
}

# await_exit PID SECONDS: 0 once the process is gone
await_exit() {
	local n=0
	while kill -0 "$1" 2>/dev/null; do
		[ $n -ge $(($2 * 2)) ] && return 1
		sleep 0.5
		n=$((n + 1))
	done
	return 0
}

# The VMs' folder is on a local file system: the nested host's work
# directories are 9p, which cannot hold the control socket.  The console
# is kept in $T.
job_control() {
	local home rc
	home=$(mktemp -d "${TMPDIR:-/tmp}/imgvm-control.XXXXXX")
	control_lab "$home"
	rc=$?
	cp "$home/lab/console.log" "$T/control-console.log" 2>/dev/null
	rm -rf "$home"
	return $rc
}

control_lab() {
	local home=$1 out pid con s1 s2 w1 w2
	export IMGVM_HOME=$home
	out=$("$IMGVM" create lab --memory 512M --disk new:vdi:256M \
		--cdrom "$GUEST/installer-wait.iso" 2>&1)
	if [ $? = 0 ] && [ -e "$home/lab/lab.vdi" ]; then
		ok "imgvm create lab --disk new:vdi:256M --cdrom installer-wait.iso"
	else
		fail "imgvm create: $out"
		return 1
	fi
	if "$IMGVM" snapshot lab create blank >/dev/null; then
		ok "imgvm snapshot lab create blank (before the install)"
	else
		fail "snapshot create"
	fi
	con=$home/lab/console.log
	out=$("$IMGVM" start lab --detach --timeout "$TIMEOUT" 2>&1)
	pid=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' <<<"$out")
	if [ -z "$pid" ] || [ ! -S "$home/lab/control.sock" ] ||
		[ "$(stat -c %a "$home/lab/control.sock")" != 600 ]; then
		fail "imgvm start lab --detach: $out"
		return 1
	fi
	ok "imgvm start --detach returns with the VM running, its control socket mode 0600"
	s1=$(control_json lab status)
	if ! await_line "$con" INSTALL-OK "$TIMEOUT"; then
		fail "lab install: no INSTALL-OK: $(tail_log "$con" 2>/dev/null)"
		"$IMGVM" stop lab
		return 1
	fi
	ok "the detached VM installs -> INSTALL-OK on its console file"
	s2=$(control_json lab status)
	w1=$(sed -n 's/.*"bytes_written": *\([0-9]*\).*/\1/p' <<<"$s1")
	w2=$(sed -n 's/.*"bytes_written": *\([0-9]*\).*/\1/p' <<<"$s2")
	if [ -n "$w2" ] && [ "$w2" -gt "${w1:-0}" ] && [ "$w2" -ge 8388608 ] &&
		grep -q '"medium": *"[^"]*installer-wait.iso"' <<<"$s2" &&
		grep -q '"state": *"running"' <<<"$s2"; then
		ok "status: running, bytes written grew ${w1:-0} -> $w2, the CD's medium is the ISO"
	else
		fail "status: $s1 / $s2"
	fi
	"$IMGVM" pause lab
	s1=$(control_json lab status)
	"$IMGVM" resume lab
	s2=$(control_json lab status)
	if grep -q '"state": *"paused"' <<<"$s1" && grep -q '"state": *"running"' <<<"$s2"; then
		ok "pause / resume: status says paused, then running"
	else
		fail "pause/resume: $s1 / $s2"
	fi
	if "$IMGVM" eject lab && await_line "$con" MEDIA-EJECTED 60 &&
		grep -q '"medium": *null' <<<"$(control_json lab status)"; then
		ok "imgvm eject while it runs: the guest's /dev/sr0 loses its disc (MEDIA-EJECTED), status shows an empty drive"
	else
		fail "eject: $(tail_log "$con")"
	fi
	out=$("$IMGVM" powerbutton lab 2>&1)
	if await_exit "$pid" 120 && grep -qa 'POWER-BUTTON pressed' "$con" &&
		grep -qa 'power off' "$con"; then
		ok "imgvm powerbutton: the guest sees the ACPI power button, shuts down cleanly, imgvm ends${out:+ ($out)}"
	else
		fail "powerbutton ($out): $(tail_log "$con")"
		"$IMGVM" stop lab
		await_exit "$pid" 30
		return 1
	fi
	if grep -q 'lab  *stopped' <<<"$("$IMGVM" list)" && [ ! -e "$home/lab/control.sock" ]; then
		ok "after power-off: list says stopped, the control socket is gone"
	else
		fail "after power-off: $("$IMGVM" list); $(ls "$home/lab")"
	fi
	"$IMGVM" modify lab --cdrom none --no-reboot
	out=$("$IMGVM" start lab --detach --timeout "$TIMEOUT" 2>&1)
	pid=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' <<<"$out")
	if [ -n "$pid" ] && await_exit "$pid" "$TIMEOUT" && grep -qa MARKER-OK "$con" &&
		grep -qa WRITE-OK "$con"; then
		ok "imgvm start lab again (no CD): boots the installed disk -> MARKER-OK, WRITE-OK"
	else
		fail "second start ($out): $(tail_log "$con")"
		return 1
	fi
	# the snapshot taken before the install: reverted, the disk is blank
	"$IMGTOOL" convert -O raw "$home/lab/lab.vdi" "$T/lab-installed.raw" &&
		"$IMGVM" snapshot lab revert blank >/dev/null &&
		"$IMGTOOL" convert -O raw "$home/lab/lab.vdi" "$T/lab-reverted.raw"
	if ! cmp -s -n $((256 << 20)) "$T/lab-installed.raw" /dev/zero &&
		cmp -s -n $((256 << 20)) "$T/lab-reverted.raw" /dev/zero &&
		[ "$(stat -c %s "$T/lab-reverted.raw")" = $((256 << 20)) ]; then
		ok "imgvm snapshot lab revert blank: the installed disk is blank again"
	else
		fail "snapshot revert: $(ls -l "$T"/lab-*.raw 2>&1 | tr '\n' ' ')"
	fi
	rm -f "$T/lab-installed.raw" "$T/lab-reverted.raw"
}
