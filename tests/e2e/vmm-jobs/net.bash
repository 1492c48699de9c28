# shellcheck shell=bash
# Guest cases of the network card (virtio-net behind libslirp), sourced by
# tests/e2e/vmm.sh.  One guest run (2 vCPUs, 2 GiB), restrict=on, so
# nothing leaves the host but loopback:
#   - iPXE (the card's option ROM, --boot net) PXE-boots: DHCP, its script
#     from the slirp TFTP directory, the test guest's kernel and initramfs
#     over HTTP (TFTP's one 1.4 KB block a round trip took two minutes for
#     their 13 MB in the nested host)
#   - the guest's Linux driver gets a DHCP lease
#   - it fetches 3 MB from an HTTP server on 127.0.0.1 through a guestfwd;
#     the host compares the sha256
#   - a host connection through a hostfwd reaches the guest's TCP echo
#     service
VMM_EXTRA_JOBS+=("net")
VMM_EXTRA_HOST+=(net_host_cases)
VMM_EXTRA_PREPARE+=(net_prepare)

NET_MAC=52:54:00:12:34:99

net_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

net_host_cases() {
	bad_option "--net with an unknown backend" "--net" boot --net bridge
	bad_option "--net with a bad hostfwd" "hostfwd" boot --net user,hostfwd=tcp:1.2.3.4
	bad_option "--net guestfwd outside 10.0.2.0/24" "10.0.2.0/24" boot --net user,guestfwd=tcp:192.168.1.1:80-cmd:true
	bad_option "--boot net without --net" "needs --net" boot --boot net
	check "imgvm --help documents --net and its options" \
		grep -q -- 'hostfwd=.*guestfwd=\|guestfwd=' <<<"$("$IMGVM" --help 2>&1)"
}

# The TFTP directory for PXE: the iPXE script slirp's DHCP names as the
# boot file, which loads the test guest's kernel and initramfs from the
# HTTP server behind the guestfwd.  The HTTP payload.
net_prepare() {
	mkdir -p "$PREP/tftp"
	printf '%s\n' '#!ipxe' 'echo imgvm-pxe: loading the test guest over HTTP' \
		'kernel http://10.0.2.100/vmlinuz initrd=initrd.gz console=ttyS0,115200 quiet panic=1 imgvm=net imgvm.pxe=1' \
		'initrd http://10.0.2.100/initrd.gz' 'boot' >"$PREP/tftp/boot.ipxe"
	head -c 3000000 /dev/urandom >"$PREP/payload"
}

# echo_through PORT TEXT: one connection to 127.0.0.1:PORT, TEXT sent,
# what comes back printed (retried while the forward is not yet served)
net_echo_through() {
	python3 - "$1" "$2" <<'PY'
import socket, sys, time
port, text = int(sys.argv[1]), sys.argv[2].encode()
for attempt in range(20):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(text)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        if got:
            print(got.decode(errors="replace"))
            sys.exit(0)
    except OSError:
        pass
    time.sleep(1)
sys.exit(1)
PY
}

job_net() {
	local log=$T/net.log www=$T/www wport hport srv pid i reply want got word tmo
	if ! command -v socat >/dev/null; then
		echo "skip - net: socat is needed for the guestfwd to the HTTP server (make deps)"
		return 0
	fi
	mkdir -p "$www"
	cp "$PREP/payload" "$GUEST/vmlinuz" "$GUEST/initrd.gz" "$www/"
	# A guest stopped by an error (a triple fault, as run_vm retries) runs
	# once more, loudly; imgvm's message names the registers from before
	# the fault and the first attempt's logs are kept as net.log.1*.
	for attempt in 1 2; do
		wport=$(net_free_port)
		hport=$(net_free_port)
		python3 -m http.server --bind 127.0.0.1 --directory "$www" "$wport" >"$T/net-http.log" 2>&1 &
		srv=$!
		# iPXE asks for the kernel seconds after it starts: the server
		# must listen by then (python starts slowly in the nested host)
		for i in $(seq 300); do
			(exec 3<>"/dev/tcp/127.0.0.1/$wport") 2>/dev/null && break
			sleep 0.2
		done
		word=imgvm-echo-$RANDOM$RANDOM
		# iPXE, then Linux with two vCPUs: a minute more than one boot
		# gets elsewhere
		tmo=$((TIMEOUT + 60))
		timeout -k 10 $((tmo + 20)) "$IMGVM" boot --serial "file:$log" --timeout "$tmo" \
			--no-reboot --cpus 2 --memory 2G --boot net \
			--net "user,restrict=on,mac=$NET_MAC,tftp=$PREP/tftp,bootfile=boot.ipxe,hostfwd=tcp:127.0.0.1:$hport-:7,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:$wport" \
			</dev/null 2>"$log.err" &
		pid=$!
		for i in $(seq $((tmo * 2))); do
			grep -qa 'NET-ECHO-READY\|NET-FAIL' "$log" 2>/dev/null && break
			kill -0 $pid 2>/dev/null || break
			sleep 0.5
		done
		reply=
		grep -qa NET-ECHO-READY "$log" && reply=$(net_echo_through "$hport" "$word")
		wait $pid
		RC=$?
		kill $srv 2>/dev/null
		wait $srv 2>/dev/null
		[ "$attempt" = 1 ] && [ "$RC" = 2 ] || break
		echo "# RETRIED net: $(tr '\n' ' ' <"$log.err" | cut -c1-400)"
		mv "$log" "$log.1"
		mv "$log.err" "$log.1.err"
	done
	# restricted, slirp's DHCP offers no gateway and no DNS server
	if grep -qa 'iPXE' "$log" && grep -qa 'imgvm-pxe: loading' "$log" &&
		grep -qa 'PXE-BOOT-OK' "$log" && grep -q 'GET /initrd.gz' "$T/net-http.log"; then
		ok "--boot net: iPXE (option ROM pci1af4,1000.rom) PXE-boots: its script from the slirp TFTP directory, the kernel and initramfs over HTTP"
	else
		fail "net: PXE boot (rc=$RC): $(tail_log "$log")"
		return 1
	fi
	if grep -qa "NET-DHCP-OK 10.0.2.15 router  dns  mac $NET_MAC" "$log"; then
		ok "virtio-net + slirp (restrict=on): DHCP lease 10.0.2.15 with no gateway or DNS offered, mac= honoured"
	else
		fail "net: DHCP (rc=$RC): $(tail_log "$log")"
		return 1
	fi
	want="$(sha256sum <"$PREP/payload" | cut -d' ' -f1) $(stat -c %s "$PREP/payload")"
	got=$(grep -a 'NET-HTTP-SHA256' "$log" | tr -d '\r' | head -1)
	if [ "$got" = "NET-HTTP-SHA256 $want" ]; then
		ok "guestfwd to an HTTP server on 127.0.0.1: the guest fetched 3 MB, sha256 matches"
	else
		fail "net: HTTP through guestfwd: want '$want', guest said '$got'"
	fi
	if [ "$reply" = "$word" ] && grep -qa NET-ECHO-DONE "$log"; then
		ok "hostfwd 127.0.0.1:$hport -> guest port 7: the guest's echo service answered"
	else
		fail "net: hostfwd echo: sent '$word', got '$reply' (rc=$RC): $(tail_log "$log")"
	fi
	if [ $RC = 0 ] && grep -qa ', 2 CPUs online' "$log"; then
		ok "--cpus 2 --memory 2G with the network card: both vCPUs up, clean power-off"
	else
		fail "net: --cpus 2 --memory 2G run (rc=$RC): $(grep -a 'CPUs online' "$log" | head -1)"
	fi
}
