#!/bin/bash
# Storage backends end to end: images on NBD servers (qemu-nbd, nbdkit's
# memory, data and sparse-random plugins, imgtool serve) and behind HTTP
# servers (with and without range requests, flaky, stalling), read and
# written by imgtool, cross-checked with nbdcopy, qemu-img and sha256sum.
# Servers die or stall mid-transfer: one line, bounded time, source intact.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
PIDS=()
HERE=$PWD

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT

# Every wait of a remote backend gives up after this long.
export IMG_BACKEND_TIMEOUT=3

# alloc_kib FILE: space the file takes on disk.
alloc_kib() { du -k "$1" | cut -f1; }

# one_line FILE: the error is exactly one line naming something useful.
one_line() { [ "$(wc -l <"$1")" -eq 1 ] && grep -q '^imgtool: ' "$1"; }

# wait_server SOCKET PIDFILE: until nbdkit listens and has written its
# PID file (it writes it once it accepts connections).
wait_server() {
	for _ in $(seq 200); do
		[ -S "$1" ] && [ -s "$2" ] && return 0
		sleep 0.05
	done
	return 1
}

# wait_pidfile PIDFILE: until a server has written its PID file.
wait_pidfile() {
	for _ in $(seq 200); do
		[ -s "$1" ] && return 0
		sleep 0.05
	done
	return 1
}

# A TCP port on 127.0.0.1 that nothing listens on.
unused_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
	echo 1
}

# A 64 MiB disk: random data at 4-12 MiB and 40-41 MiB, holes elsewhere.
head -c $((8 << 20)) /dev/urandom >"$T/a.bin"
head -c $((1 << 20)) /dev/urandom >"$T/b.bin"
truncate -s 64M "$T/disk.raw"
dd if="$T/a.bin" of="$T/disk.raw" bs=1M seek=4 conv=notrunc status=none
dd if="$T/b.bin" of="$T/disk.raw" bs=1M seek=40 conv=notrunc status=none
DISK_SHA=$(sha256sum <"$T/disk.raw" | cut -d' ' -f1)

have() { command -v "$1" >/dev/null; }

# The backends' libraries are loaded by the first name that needs them:
# a local image loads none of them (ld.so's own log says what it loaded).
# The ASan build links them (Makefile).
if ldd "$IMGTOOL" | grep -q libasan; then
	skip "backend libraries loaded on use" "the sanitizer build links them in (see the Makefile)"
else
	"$IMGTOOL" create -q -f vdi "$T/local.vdi" 1M
	LD_DEBUG=files "$IMGTOOL" info "$T/local.vdi" >/dev/null 2>"$T/ld.log"
	check "a local image loads neither librbd, libcurl nor libnbd" \
		test -s "$T/ld.log" -a -z "$(grep -oE 'file=(librbd|librados|libcurl|libnbd)[^ ]*' "$T/ld.log")"
	LD_DEBUG=files "$IMGTOOL" info "nbd+unix:///?socket=$T/nothing.sock" >/dev/null 2>"$T/ld.log"
	check "an nbd:// name loads libnbd then" grep -q 'file=libnbd.so.0 .*dynamically loaded by' "$T/ld.log"
fi

# ---- NBD ------------------------------------------------------------------

if ! have qemu-nbd || ! have nbdkit || ! have nbdcopy || ! have qemu-img; then
	skip "nbd" "needs qemu-nbd, nbdkit, nbdcopy and qemu-img (scripts/deps.sh installs them)"
else
	# qemu-nbd exporting a raw file, read-only, over a Unix socket
	qemu-nbd -f raw -r -t -k "$T/q.sock" --fork --pid-file="$T/q.pid" "$T/disk.raw"
	PIDS+=("$(cat "$T/q.pid")")
	U="nbd+unix:///?socket=$T/q.sock"
	"$IMGTOOL" info "$U" >"$T/info" 2>&1
	check "nbd: info over qemu-nbd gives the size" grep -q '(67108864 bytes)' "$T/info"
	# disk size: the extents the server says are not holes, as nbdinfo
	# --map lists them (asked over the connection already open: qemu-nbd
	# takes one client at a time)
	want=$(nbdinfo --map "$U" | awk '$4 !~ /hole/ { s += $2 } END { print s + 0 }')
	got=$("$IMGTOOL" info --output=json "$U" | sed -n 's/.*"actual-size": *\([0-9]*\).*/\1/p')
	check "nbd: info's disk size is the allocated extents nbdinfo --map lists ($got of $want bytes)" test "$got" = "$want" -a "$want" -gt 0 -a "$want" -lt 67108864
	"$IMGTOOL" convert -O raw "$U" "$T/from-nbd.raw" 2>"$T/err"
	check "nbd: convert from qemu-nbd is byte-identical" cmp -s "$T/from-nbd.raw" "$T/disk.raw"
	k=$(alloc_kib "$T/from-nbd.raw")
	if [ "$k" -le 9300 ] && [ "$k" -ge 9000 ]; then ok "nbd: convert stays sparse (base:allocation): $k KiB"; else fail "nbd: convert allocated $k KiB, 9216 expected"; fi
	sum=$("$IMGTOOL" checksum "$U" | cut -d' ' -f1)
	if [ "$sum" = "$DISK_SHA" ]; then ok "nbd: checksum equals sha256sum"; else fail "nbd: checksum $sum, sha256sum $DISK_SHA"; fi
	check "nbd: compare with the local file" "$IMGTOOL" compare "$U" "$T/disk.raw"
	"$IMGTOOL" map "$U" >"$T/map"
	if grep -q '^0x400000 *0x800000 *data' "$T/map" && grep -q '^0xc00000 *0x1c00000 *unallocated' "$T/map"; then
		ok "nbd: map shows data and holes where they are"
	else
		fail "nbd: map: $(tr '\n' '|' <"$T/map")"
	fi
	"$IMGTOOL" convert -n -O raw "$T/disk.raw" "$U" 2>"$T/err"
	if [ $? -ne 0 ] && one_line "$T/err" && grep -qi 'read-only' "$T/err"; then
		ok "nbd: writing a read-only export: $(cat "$T/err")"
	else
		fail "nbd: writing a read-only export: $(cat "$T/err")"
	fi

	# an image format over NBD: qemu-nbd exports the vdi file's bytes
	qemu-img convert -f raw -O vdi "$T/disk.raw" "$T/disk.vdi"
	qemu-nbd -f raw -r -t -k "$T/v.sock" --fork --pid-file="$T/v.pid" "$T/disk.vdi"
	PIDS+=("$(cat "$T/v.pid")")
	UV="nbd+unix:///?socket=$T/v.sock"
	"$IMGTOOL" info "$UV" >"$T/info" 2>&1
	check "nbd: a vdi behind NBD is probed by content" grep -q 'file format: vdi' "$T/info"
	"$IMGTOOL" convert -O raw "$UV" "$T/vdi-from-nbd.raw"
	check "nbd: vdi over NBD converts to the right bytes" cmp -s "$T/vdi-from-nbd.raw" "$T/disk.raw"

	# nbdkit memory (multi-conn): write images into it, read them back
	nbdkit -U "$T/m.sock" -P "$T/m.pid" memory 128M
	wait_server "$T/m.sock" "$T/m.pid"
	PIDS+=("$(cat "$T/m.pid")")
	UM="nbd+unix:///?socket=$T/m.sock"
	"$IMGTOOL" convert -O raw "$T/disk.raw" "$UM" 2>"$T/err"
	check "nbd: convert into nbdkit memory" test $? -eq 0
	nbdcopy "$UM" "$T/mem.raw"
	if cmp -s <(head -c 64M "$T/mem.raw") "$T/disk.raw"; then ok "nbd: nbdcopy reads back what imgtool wrote"; else fail "nbd: nbdcopy read back other bytes"; fi
	# a format found by its header: the export keeps its size and the
	# image is its first bytes (formats found by a trailer, like VHD, need
	# an export of exactly their size)
	"$IMGTOOL" convert -O vdi "$T/disk.raw" "$UM" 2>"$T/err"
	"$IMGTOOL" info "$UM" >"$T/info" 2>&1
	check "nbd: a vdi created on an export is a vdi there" grep -q 'file format: vdi' "$T/info"
	nbdcopy "$UM" "$T/mem.vdi"
	if qemu-img compare -f vdi "$T/mem.vdi" "$T/disk.raw" >/dev/null 2>&1; then ok "nbd: qemu-img reads the vdi written over NBD"; else fail "nbd: qemu-img disagrees with the vdi written over NBD"; fi

	# nbdkit data: a hidden pattern at known offsets, holes elsewhere
	nbdkit -U "$T/d.sock" -P "$T/d.pid" data data='@0x100000 "imgtool-backend" @0x2400000 1 2 3 4' size=48M
	wait_server "$T/d.sock" "$T/d.pid"
	PIDS+=("$(cat "$T/d.pid")")
	"$IMGTOOL" convert -O raw "nbd+unix:///?socket=$T/d.sock" "$T/data.raw"
	if [ "$(dd if="$T/data.raw" bs=1 skip=$((0x100000)) count=15 status=none)" = imgtool-backend ] &&
		[ "$(od -An -tu1 -j $((0x2400000)) -N4 "$T/data.raw" | tr -s ' ')" = " 1 2 3 4" ] &&
		[ "$(stat -c %s "$T/data.raw")" -eq $((48 << 20)) ] && [ "$(alloc_kib "$T/data.raw")" -le 64 ]; then
		ok "nbd: nbdkit data pattern lands at its offsets, the rest sparse"
	else
		fail "nbd: nbdkit data pattern ($(alloc_kib "$T/data.raw") KiB)"
	fi

	# nbdkit sparse-random: against nbdcopy, bytes and allocation
	nbdkit -U "$T/s.sock" -P "$T/s.pid" sparse-random 512M seed=4242 percent=5
	wait_server "$T/s.sock" "$T/s.pid"
	PIDS+=("$(cat "$T/s.pid")")
	US="nbd+unix:///?socket=$T/s.sock"
	"$IMGTOOL" convert -O raw "$US" "$T/sr.raw"
	nbdcopy "$US" "$T/sr-nbdcopy.raw"
	check "nbd: sparse-random converts to the bytes nbdcopy gets" cmp -s "$T/sr.raw" "$T/sr-nbdcopy.raw"
	a=$(alloc_kib "$T/sr.raw") b=$(alloc_kib "$T/sr-nbdcopy.raw")
	if [ "$a" -le $((b + b / 10)) ]; then ok "nbd: sparse-random output as sparse as nbdcopy's ($a vs $b KiB)"; else fail "nbd: sparse-random output $a KiB, nbdcopy's $b KiB"; fi

	# imgtool serve: the URI it prints opens as it is
	qemu-img convert -f raw -O vmdk "$T/disk.raw" "$T/disk.vmdk"
	start_server "$T/serve.out" -r -k "$T/ours.sock" "$T/disk.vmdk" 2>/dev/null
	started=$?
	PIDS+=("$SRV_PID")
	if [ $started -eq 0 ]; then
		"$IMGTOOL" convert -O raw "$SRV_URI" "$T/served.raw" 2>"$T/err"
		check "nbd: imgtool serve's own URI ($SRV_URI) converts back" cmp -s "$T/served.raw" "$T/disk.raw"
	else
		fail "nbd: imgtool serve printed no URI: $(head -3 "$T/serve.out.err")"
	fi

	# a server that dies in the middle of a read
	nbdkit -U "$T/k.sock" -P "$T/k.pid" --filter=delay sparse-random 2G seed=1 percent=50 delay-read=200ms
	wait_server "$T/k.sock" "$T/k.pid" || fail "nbd: nbdkit with the delay filter did not start"
	kpid=$(cat "$T/k.pid")
	start=$SECONDS
	"$IMGTOOL" convert -O raw "nbd+unix:///?socket=$T/k.sock" "$T/killed.raw" 2>"$T/err" &
	cpid=$!
	sleep 1.5
	kill -9 "$kpid"
	wait "$cpid"
	rc=$?
	if [ $rc -ne 0 ] && one_line "$T/err" && ! grep -q 'connect:' "$T/err" && [ $((SECONDS - start)) -le 20 ] && [ ! -e "$T/killed.raw" ]; then
		ok "nbd: server killed mid-read: exit $rc in $((SECONDS - start)) s, no partial target, $(cat "$T/err")"
	else
		fail "nbd: server killed mid-read: rc=$rc after $((SECONDS - start)) s: $(cat "$T/err")"
	fi

	# a server that dies in the middle of a write; the source is untouched
	head -c $((256 << 20)) /dev/urandom >"$T/big.raw"
	big_sha=$(sha256sum <"$T/big.raw")
	nbdkit -U "$T/w.sock" -P "$T/w.pid" --filter=delay memory 256M delay-write=100ms
	wait_server "$T/w.sock" "$T/w.pid" || fail "nbd: nbdkit with the delay filter did not start"
	wpid=$(cat "$T/w.pid")
	start=$SECONDS
	"$IMGTOOL" convert -n -O raw "$T/big.raw" "nbd+unix:///?socket=$T/w.sock" 2>"$T/err" &
	cpid=$!
	sleep 1.5
	kill -9 "$wpid"
	wait "$cpid"
	rc=$?
	if [ $rc -ne 0 ] && one_line "$T/err" && ! grep -q 'connect:' "$T/err" && [ $((SECONDS - start)) -le 20 ] && [ "$(sha256sum <"$T/big.raw")" = "$big_sha" ]; then
		ok "nbd: server killed mid-write: exit $rc in $((SECONDS - start)) s, source intact, $(cat "$T/err")"
	else
		fail "nbd: server killed mid-write: rc=$rc after $((SECONDS - start)) s: $(cat "$T/err")"
	fi
	rm -f "$T/big.raw"

	# a server that stops answering: bounded by IMG_BACKEND_TIMEOUT
	nbdkit -U "$T/z.sock" -P "$T/z.pid" --filter=delay memory 64M delay-read=600
	wait_server "$T/z.sock" "$T/z.pid"
	PIDS+=("$(cat "$T/z.pid")")
	start=$SECONDS
	timeout 60 "$IMGTOOL" checksum "nbd+unix:///?socket=$T/z.sock" >/dev/null 2>"$T/err"
	rc=$?
	if [ $rc -ne 0 ] && [ $rc -ne 124 ] && one_line "$T/err" && grep -q 'no answer' "$T/err" && [ $((SECONDS - start)) -le 15 ]; then
		ok "nbd: a silent server fails in $((SECONDS - start)) s: $(cat "$T/err")"
	else
		fail "nbd: silent server: rc=$rc after $((SECONDS - start)) s: $(cat "$T/err")"
	fi

	# A source that fails to read: the target this convert created is
	# removed (a file), or left as it is (an export is the server's), and
	# the one error line says which.
	nbdkit -U "$T/e.sock" -P "$T/e.pid" --filter=error pattern 64M error-pread=EIO error-pread-rate=100%
	wait_server "$T/e.sock" "$T/e.pid" || fail "nbd: nbdkit with the error filter did not start"
	PIDS+=("$(cat "$T/e.pid")")
	"$IMGTOOL" convert -f raw -O vdi "nbd+unix:///?socket=$T/e.sock" "$T/failed.vdi" 2>"$T/err"
	rc=$?
	if [ $rc -eq 1 ] && one_line "$T/err" && grep -q 'Input/output error; the incomplete target was removed$' "$T/err" && [ ! -e "$T/failed.vdi" ]; then
		ok "nbd: a source read error removes the VDI the convert created: $(cat "$T/err")"
	else
		fail "nbd: source read error: rc=$rc, target $(ls "$T/failed.vdi" 2>&1): $(cat "$T/err")"
	fi
	nbdkit -U "$T/m2.sock" -P "$T/m2.pid" memory 64M
	wait_server "$T/m2.sock" "$T/m2.pid" || fail "nbd: nbdkit memory did not start"
	PIDS+=("$(cat "$T/m2.pid")")
	"$IMGTOOL" convert -f raw -O vdi "nbd+unix:///?socket=$T/e.sock" "nbd+unix:///?socket=$T/m2.sock" 2>"$T/err"
	rc=$?
	if [ $rc -eq 1 ] && one_line "$T/err" && grep -q 'the incomplete target stays where it is' "$T/err" &&
		nbdinfo "nbd+unix:///?socket=$T/m2.sock" >/dev/null 2>&1; then
		ok "nbd: a failed convert onto an export leaves the export, and says so: $(cat "$T/err")"
	else
		fail "nbd: failed convert onto an export: rc=$rc: $(cat "$T/err")"
	fi

	# ---- NBD over TLS (nbds://) ----
	# A CA, a server certificate it signed for localhost and 127.0.0.1,
	# and a second CA that signed nothing here.
	mkdir -p "$T/pki" "$T/other"
	if (cd "$T/pki" &&
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca-key.pem -out ca-cert.pem &&
		openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server-key.pem -out server.csr &&
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext &&
		openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile ext -out server-cert.pem &&
		cd "$T/other" &&
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout ca-key.pem -out ca-cert.pem) >/dev/null 2>&1; then
		port=$(unused_port)
		nbdkit -i 127.0.0.1 -p "$port" -P "$T/tls.pid" --tls=require --tls-certificates="$T/pki" memory 64M
		wait_pidfile "$T/tls.pid" || fail "nbds: nbdkit --tls=require did not start"
		PIDS+=("$(cat "$T/tls.pid")")
		TU="nbds://localhost:$port/?tls-certificates=$T/pki"
		"$IMGTOOL" convert -n -f raw -O raw "$T/disk.raw" "$TU" 2>"$T/err"
		check "nbds: convert writes into nbdkit --tls=require" test $? = 0
		"$IMGTOOL" info "$TU" >"$T/info" 2>&1
		check "nbds: info over TLS gives the size" grep -q '(67108864 bytes)' "$T/info"
		rm -f "$T/tls.raw"
		"$IMGTOOL" convert -O raw "$TU" "$T/tls.raw" 2>"$T/err"
		check "nbds: convert from nbdkit over TLS is byte-identical to what was written" cmp -s "$T/tls.raw" "$T/disk.raw"
		nbdcopy "$TU" - 2>/dev/null | cmp -s - "$T/disk.raw"
		check "nbds: nbdcopy reads back what imgtool wrote over TLS" test $? = 0
		"$IMGTOOL" info "nbds://localhost:$port/?tls-certificates=$T/other" >/dev/null 2>"$T/err"
		if [ $? -ne 0 ] && one_line "$T/err" && grep -q 'certificate verification' "$T/err"; then
			ok "nbds: a server certificate from another CA is refused: $(cat "$T/err")"
		else
			fail "nbds: another CA: $(cat "$T/err")"
		fi
		"$IMGTOOL" info "nbd://localhost:$port/" >/dev/null 2>"$T/err"
		if [ $? -ne 0 ] && one_line "$T/err" && grep -q 'requires TLS' "$T/err"; then
			ok "nbds: nbd:// to a server that requires TLS: $(cat "$T/err")"
		else
			fail "nbds: plain nbd:// to a TLS server: $(cat "$T/err")"
		fi
		# our own server with TLS, read by our client
		port=$(unused_port)
		"$IMGTOOL" serve --bind 127.0.0.1 --port "$port" --read-only --export-name disk \
			--tls-cert "$T/pki/server-cert.pem" --tls-key "$T/pki/server-key.pem" "$T/disk.vdi" >"$T/tserve.out" 2>&1 &
		PIDS+=("$!")
		for _ in $(seq 200); do grep -q '^serving' "$T/tserve.out" 2>/dev/null && break; sleep 0.05; done
		rm -f "$T/tls.raw"
		"$IMGTOOL" convert -O raw "nbds://localhost:$port/disk?tls-certificates=$T/pki" "$T/tls.raw" 2>"$T/err"
		check "nbds: imgtool serve --tls-cert, read by imgtool over nbds://" cmp -s "$T/tls.raw" "$T/disk.raw"
	else
		skip "nbds" "openssl could not make the test certificates"
	fi

	"$IMGTOOL" info nbd://127.0.0.1:1/x 2>"$T/err"
	if [ $? -ne 0 ] && one_line "$T/err"; then ok "nbd: nothing listening: $(cat "$T/err")"; else fail "nbd: nothing listening: $(cat "$T/err")"; fi
fi

# ---- HTTP -----------------------------------------------------------------

if ! have python3 || ! have qemu-img; then
	skip "http" "needs python3 and qemu-img"
else
	mkdir -p "$T/www"
	qemu-img convert -f raw -O vmdk "$T/disk.raw" "$T/www/disk.vmdk"
	cp "$T/disk.raw" "$T/www/disk.raw"
	for mode in range norange stall flaky; do
		python3 "$HERE/tests/e2e/http-server.py" "$T/www" "$T/port.$mode" $mode >/dev/null 2>&1 &
		PIDS+=("$!")
	done
	for mode in range norange stall flaky; do
		for _ in $(seq 200); do
			[ -e "$T/port.$mode" ] && break
			sleep 0.05
		done
	done
	H="http://127.0.0.1:$(cat "$T/port.range")"
	"$IMGTOOL" info "$H/disk.vmdk" >"$T/info" 2>&1
	if grep -q 'file format: vmdk' "$T/info" && grep -q '(67108864 bytes)' "$T/info"; then ok "http: info on a vmdk over HTTP"; else fail "http: info: $(cat "$T/info")"; fi
	check "http: info says the disk size is unavailable (HTTP cannot tell)" grep -q '^disk size: unavailable' "$T/info"
	"$IMGTOOL" convert -p -O raw "$H/disk.vmdk" "$T/http.raw" 2>"$T/err"
	check "http: convert a vmdk from HTTP is byte-identical" cmp -s "$T/http.raw" "$T/disk.raw"
	for fmt in qcow2 vhdx; do
		"$IMGTOOL" create -f $fmt "$T/probe.$fmt" 1M >/dev/null 2>&1 || continue
		qemu-img convert -f raw -O $fmt "$T/disk.raw" "$T/www/disk.$fmt"
		if "$IMGTOOL" compare "$H/disk.$fmt" "$T/disk.raw" >/dev/null 2>&1; then ok "http: a $fmt qemu-img wrote, read over HTTP, equals the raw disk"; else fail "http: $fmt over HTTP differs"; fi
	done
	sum=$("$IMGTOOL" checksum "$H/disk.raw" | cut -d' ' -f1)
	if [ "$sum" = "$DISK_SHA" ]; then ok "http: checksum of a raw image over HTTP"; else fail "http: checksum $sum"; fi
	"$IMGTOOL" convert -O raw "$T/disk.raw" "$H/new.raw" 2>"$T/err"
	if [ $? -ne 0 ] && one_line "$T/err"; then ok "http: read-only: $(cat "$T/err")"; else fail "http: writing: $(cat "$T/err")"; fi
	"$IMGTOOL" info "$H/absent.vmdk" 2>"$T/err"
	if [ $? -ne 0 ] && one_line "$T/err" && grep -q 404 "$T/err"; then ok "http: missing file: $(cat "$T/err")"; else fail "http: missing file: $(cat "$T/err")"; fi
	"$IMGTOOL" info "http://127.0.0.1:$(cat "$T/port.norange")/disk.vmdk" 2>"$T/err"
	if [ $? -ne 0 ] && one_line "$T/err" && grep -q 'range requests' "$T/err"; then ok "http: no range support: $(cat "$T/err")"; else fail "http: no range support: $(cat "$T/err")"; fi
	"$IMGTOOL" convert -O raw "http://127.0.0.1:$(cat "$T/port.flaky")/disk.vmdk" "$T/flaky.raw" 2>"$T/err"
	check "http: every other request 503: retries give the right bytes" cmp -s "$T/flaky.raw" "$T/disk.raw"
	start=$SECONDS
	timeout 90 "$IMGTOOL" info "http://127.0.0.1:$(cat "$T/port.stall")/disk.vmdk" 2>"$T/err"
	rc=$?
	if [ $rc -ne 0 ] && [ $rc -ne 124 ] && one_line "$T/err" && [ $((SECONDS - start)) -le 30 ]; then
		ok "http: a stalling server fails in $((SECONDS - start)) s: $(cat "$T/err")"
	else
		fail "http: stalling server: rc=$rc after $((SECONDS - start)) s: $(cat "$T/err")"
	fi
fi

finish
