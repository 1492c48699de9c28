#!/bin/bash
# Runs where /dev/kvm can run firmware (hardware KVM or the nested test
# host).  TCP throughput over user-mode networking: imgvm (virtio-net +
# libslirp) against QEMU (-nic user,model=virtio-net-pci, also libslirp),
# the same guest (netbench.iso), the same KVM, interleaved.
#   host-to-guest: the guest fetches 64 MiB over HTTP from a server on
#                  127.0.0.1 through a guestfwd (timed by the guest)
#   guest-to-host: the host reads 64 MiB from the guest through a hostfwd
#                  (timed by the host)
# Env: PAIRS, IMGVM, GUEST (tests/guest/build-test-iso.sh output), OUT
# (rows file, as bench/vmm-inner.sh writes them).
set -uo pipefail
T=$(mktemp -d /tmp/net-bench.XXXXXX)
srv=
# the guests' consoles are kept next to OUT
trap '[ -n "$srv" ] && kill $srv 2>/dev/null; cp "$T"/*.log "$(dirname "$OUT")/" 2>/dev/null; rm -rf "$T"' EXIT
TMO=300
BYTES=$((64 << 20))
: >"$OUT"
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
median() { sort -n | awk '{v[NR]=$1} END{print (NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2}'; }
mkdir -p "$T/www"
head -c $BYTES /dev/urandom >"$T/www/big"
wport=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$T/www" "$wport" >"$T/http.log" 2>&1 &
srv=$!

# one_run ours|peer: prints "host-to-guest-MB/s guest-to-host-MB/s"
one_run() {
	local side=$1 log=$T/$1.log hport fwd pid i h2g g2h
	hport=$(free_port)
	fwd="restrict=on,hostfwd=tcp:127.0.0.1:$hport-:9,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:$wport"
	rm -f "$log"
	if [ "$side" = ours ]; then
		timeout -k 5 $TMO "$IMGVM" boot --serial "file:$log" --no-reboot --memory 1G \
			--cdrom "$GUEST/netbench.iso" --net "user,$fwd" </dev/null >"$T/$side.out" 2>&1 &
	else
		timeout -k 5 $TMO qemu-system-x86_64 -accel kvm -M pc -m 1024 -smp 1 -display none \
			-vga none -no-reboot -boot d -serial "file:$log" -cdrom "$GUEST/netbench.iso" \
			-nic "user,model=virtio-net-pci,$fwd" </dev/null >"$T/$side.out" 2>&1 &
	fi
	pid=$!
	for i in $(seq $((TMO * 2))); do
		grep -qa 'NETBENCH-READY\|NET-FAIL' "$log" 2>/dev/null && break
		kill -0 $pid 2>/dev/null || break
		sleep 0.5
	done
	h2g=$(tr -d '\r' <"$log" | awk '/^NETBENCH host-to-guest/ { print $3 }')
	g2h=$(python3 - "$hport" "$BYTES" <<'PY'
import socket, sys, time
port, want = int(sys.argv[1]), int(sys.argv[2])
got = 0
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    t0 = time.monotonic()
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        got += len(chunk)
    t = time.monotonic() - t0
except OSError as e:
    print("guest-to-host: %s after %d bytes" % (e, got), file=sys.stderr)
print("%.2f" % (got / t / 1e6) if got == want else "0")
PY
)
	wait $pid
	if [ -z "$h2g" ] || [ "${g2h:-0}" = 0 ]; then
		echo "net bench ($side) failed: $(tr -d '\r' <"$log" | grep -a -m3 -E 'NET|lockup|rcu|BUG|Oops|stall')" >&2
		return 1
	fi
	awk -v b=$BYTES -v t="$h2g" -v g="$g2h" 'BEGIN { printf "%.2f %s\n", b / t / 1e6, g }'
}

ours_in=() ours_out=() peer_in=() peer_out=()
for i in $(seq "${PAIRS:-3}"); do
	r=$(one_run ours) || exit 1
	read -r a b <<<"$r"
	ours_in+=("$a")
	ours_out+=("$b")
	r=$(one_run peer) || exit 1
	read -r a b <<<"$r"
	peer_in+=("$a")
	peer_out+=("$b")
	echo "pair $i: MB/s host-to-guest / guest-to-host: imgvm ${ours_in[-1]} / ${ours_out[-1]}, qemu ${peer_in[-1]} / ${peer_out[-1]}" >&2
done
row() { echo "$1|$2|$3|$4|$5|$6|$7|$8" >>"$OUT"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (a>0)?b/a:0}'; }
a=$(printf '%s\n' "${ours_in[@]}" | median)
b=$(printf '%s\n' "${peer_in[@]}" | median)
row "net TCP host-to-guest, slirp (MB/s)" "qemu-system -nic user,model=virtio-net-pci" "$a" "$b" "$(ratio "$a" "$b")" "$a / $b" - -
a=$(printf '%s\n' "${ours_out[@]}" | median)
b=$(printf '%s\n' "${peer_out[@]}" | median)
row "net TCP guest-to-host, slirp (MB/s)" "qemu-system -nic user,model=virtio-net-pci" "$a" "$b" "$(ratio "$a" "$b")" "$a / $b" - -
