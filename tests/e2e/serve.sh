#!/bin/bash
# imgtool serve (NBD) against libnbd's tools (nbdinfo, nbdcopy) and QEMU's
# NBD client (qemu-img), for raw, vdi, vhd and vmdk images: contents,
# holes, writes persisted after the server stops, hostile clients, TLS.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
SRV_PID=
SRV_URI=

# A 64 MiB disk: random data at 4-12 MiB and 40-41 MiB, never written
# elsewhere.
head -c 8M /dev/urandom >"$T/a"
head -c 1M /dev/urandom >"$T/b"
truncate -s 64M "$T/src.raw"
dd if="$T/a" of="$T/src.raw" bs=1M seek=4 conv=notrunc status=none
dd if="$T/b" of="$T/src.raw" bs=1M seek=40 conv=notrunc status=none
head -c 64M /dev/urandom >"$T/new.raw"

# to_image FMT SRC DST: qemu-img convert; VHD keeps the exact size (no CHS
# rounding) with force_size.
to_image() {
	case $1 in
	vhd) qemu-img convert -q -O vpc -o force_size=on "$2" "$3" ;;
	*) qemu-img convert -q -O "$1" "$2" "$3" ;;
	esac
}

for fmt in raw vdi vhd vmdk; do
	img=$T/disk.$fmt
	to_image "$fmt" "$T/src.raw" "$img"
	if ! "$IMGTOOL" info "$img" 2>/dev/null | grep -q "file format: $fmt"; then
		skip "$fmt" "imgtool cannot open $fmt images in this build"
		continue
	fi
	sock=$T/$fmt.sock
	if ! start_server "$T/srv.out" --socket "$sock" "$img"; then
		fail "$fmt: server starts"
		continue
	fi
	uri="nbd+unix:///disk.$fmt?socket=$sock"
	check "$fmt: banner names the socket URI" \
		test "$SRV_URI" = "$uri"
	size=$(nbdinfo --size "$uri")
	check "$fmt: nbdinfo size is the virtual size" test "$size" = 67108864
	nbdinfo --map "$uri" >"$T/map" 2>&1
	# 4M..12M data, 12M..40M a hole
	if grep -qE '^ +12582912 +29360128 +3 +hole,zero' "$T/map" &&
		grep -qE '^ +4194304 +8388608 +0 +data' "$T/map"; then
		ok "$fmt: nbdinfo --map reports holes and data"
	else
		fail "$fmt: nbdinfo --map reports holes and data"
		cat "$T/map"
	fi
	rm -f "$T/out.raw"
	nbdcopy "$uri" "$T/out.raw"
	rc=$?
	if [ $rc = 0 ] && cmp -s "$T/out.raw" "$T/src.raw"; then
		ok "$fmt: nbdcopy from the server is byte-identical"
	else
		fail "$fmt: nbdcopy from the server is byte-identical"
		echo "    nbdcopy exit $rc; $(cmp "$T/out.raw" "$T/src.raw" 2>&1 | head -1)"
		tail -3 "$T/srv.out.err"
	fi
	qemu-img convert -q -f raw -O raw "$uri" "$T/qout.raw"
	check "$fmt: qemu-img (QEMU's NBD client) reads the same" \
		cmp -s "$T/qout.raw" "$T/src.raw"
	nbdcopy "$T/new.raw" "$uri"
	nbdcopy "$uri" - | cmp -s - "$T/new.raw"
	check "$fmt: nbdcopy to the server reads back" test $? = 0
	check "$fmt: SIGTERM stops the server cleanly" stop_server
	rm -f "$T/back.raw"
	qemu-img convert -q -O raw "$img" "$T/back.raw"
	check "$fmt: writes persisted after the server stopped" \
		cmp -s "$T/back.raw" "$T/new.raw"
	if [ "$fmt" = raw ]; then
		: # raw has nothing to check
	elif "$IMGTOOL" check "$img" >"$T/check" 2>&1; then
		ok "$fmt: imgtool check is clean"
	else
		fail "$fmt: imgtool check is clean"
		cat "$T/check"
	fi
	check "$fmt: socket removed at exit" test ! -e "$sock"
done

# ---- TCP, several exports, read-only ----------------------------------
to_image vhd "$T/src.raw" "$T/two.vhd" 2>/dev/null
cp "$T/src.raw" "$T/one.raw"
second=$T/two.vhd
"$IMGTOOL" info "$second" 2>/dev/null | grep -q "file format: vhd" ||
	second=$T/src.raw
if start_server "$T/tcp.out" --port 0 --read-only --export-name one \
	--export-name two "$T/one.raw" "$second"; then
	port=$(sed -n 's|.*nbd://127.0.0.1:\([0-9]*\)/one$|\1|p' "$T/tcp.out")
	check "tcp: listens on 127.0.0.1 by default" test -n "$port"
	nbdinfo --list "nbd://127.0.0.1:$port" >"$T/list" 2>&1
	if grep -q 'export="one"' "$T/list" && grep -q 'export="two"' "$T/list"; then
		ok "tcp: nbdinfo --list shows both exports"
	else
		fail "tcp: nbdinfo --list shows both exports"
	fi
	nbdcopy "nbd://127.0.0.1:$port/two" - | cmp -s - "$T/src.raw"
	check "tcp: second export reads correctly" test $? = 0
	nbdinfo "nbd://127.0.0.1:$port/one" | grep -q 'is_read_only: true'
	check "tcp: --read-only is advertised" test $? = 0
	if nbdcopy "$T/new.raw" "nbd://127.0.0.1:$port/one" 2>/dev/null; then
		fail "tcp: writes to a read-only export fail"
	else
		ok "tcp: writes to a read-only export fail"
	fi
	check "tcp: image untouched" cmp -s "$T/one.raw" "$T/src.raw"
	# three clients at once, each with many requests in flight
	for i in 1 2 3; do
		nbdcopy --connections=4 --requests=32 \
			"nbd://127.0.0.1:$port/one" "$T/par$i.raw" &
	done
	wait %2 %3 %4 2>/dev/null
	same=0
	for i in 1 2 3; do cmp -s "$T/par$i.raw" "$T/src.raw" && same=$((same + 1)); done
	check "tcp: three parallel nbdcopy clients all byte-identical" test $same = 3
	check "tcp: server stops cleanly" stop_server
else
	fail "tcp: server starts"
fi

# ---- hostile clients while a good one copies ------------------------------
cp "$T/src.raw" "$T/h.raw"
himg=$T/h.raw
if qemu-img convert -q -O vdi "$T/src.raw" "$T/h.vdi" &&
	"$IMGTOOL" info "$T/h.vdi" 2>/dev/null | grep -q "file format: vdi"; then
	himg=$T/h.vdi
fi
if start_server "$T/h.out" --socket "$T/h.sock" "$himg"; then
	nbdcopy --requests=4 "$T/new.raw" "nbd+unix:///?socket=$T/h.sock" &
	copier=$!
	python3 - "$T/h.sock" <<'PY' >"$T/hostile" 2>&1
import socket, struct, sys, time
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(path)
    assert s.recv(18, socket.MSG_WAITALL)[:8] == b"NBDMAGIC"
    s.sendall(struct.pack(">I", 3)); return s
def closed(s):
    try:
        return s.recv(1) == b""
    except OSError:
        return True
IHAVEOPT = 0x49484156454F5054
res = []
s = conn(); s.sendall(b"\0" * 16); res.append(("bad option magic dropped", closed(s)))
s = conn(); s.sendall(struct.pack(">QII", IHAVEOPT, 0x4242, 0))
rep = s.recv(20, socket.MSG_WAITALL); t, n = struct.unpack(">QIII", rep)[2:]
s.recv(n, socket.MSG_WAITALL)
res.append(("unknown option -> NBD_REP_ERR_UNSUP", t == 0x80000001))
s.sendall(struct.pack(">QII", IHAVEOPT, 1, 0))  # EXPORT_NAME ""
info = s.recv(10, socket.MSG_WAITALL)
size = struct.unpack(">QH", info)[0]
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, size, 4096))
rep = s.recv(16, socket.MSG_WAITALL)
res.append(("read past the end -> EINVAL", struct.unpack(">IIQ", rep)[1] == 22))
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 8, 0, 1 << 30))
res.append(("1 GiB write dropped", closed(s)))
s = conn(); s.sendall(struct.pack(">QII", IHAVEOPT, 1, 0)); s.recv(10, socket.MSG_WAITALL)
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 9, 0, 65536) + b"x" * 1000)
s.close(); res.append(("disconnect mid-write", True))
for name, good in res:
    print(("ok - " if good else "FAIL - ") + name)
PY
	while read -r line; do
		case $line in
		"ok - "*) ok "hostile: ${line#ok - }" ;;
		*) fail "hostile: ${line#FAIL - }" ;;
		esac
	done <"$T/hostile"
	wait "$copier"
	check "hostile: the good client's copy succeeded meanwhile" test $? = 0
	check "hostile: server stops cleanly" stop_server
	qemu-img convert -q -O raw "$himg" "$T/h.back"
	check "hostile: image holds exactly the good client's data" \
		cmp -s "$T/h.back" "$T/new.raw"
	if [ "$himg" = "$T/h.vdi" ]; then
		qemu-img check -q "$himg" >/dev/null 2>&1
		check "hostile: qemu-img check of the VDI is clean" test $? = 0
	fi
else
	fail "hostile: server starts"
fi

# ---- SIGTERM while a client is writing --------------------------------------
if qemu-img convert -q -O vdi "$T/src.raw" "$T/t.vdi" &&
	"$IMGTOOL" info "$T/t.vdi" 2>/dev/null | grep -q "file format: vdi" &&
	start_server "$T/t.out" --socket "$T/t.sock" "$T/t.vdi"; then
	nbdcopy --requests=8 "$T/new.raw" "nbd+unix:///?socket=$T/t.sock" 2>/dev/null &
	copier=$!
	sleep 0.3
	check "sigterm mid-copy: server exits 0" stop_server
	wait "$copier"
	"$IMGTOOL" check "$T/t.vdi" >"$T/check" 2>&1
	check "sigterm mid-copy: imgtool check is clean" test $? = 0
	qemu-img check -q "$T/t.vdi" >/dev/null 2>&1
	check "sigterm mid-copy: qemu-img check is clean" test $? = 0
fi

# ---- a backing chain: the overlay shows the base, writes stay in it ---------
if qemu-img convert -q -O vmdk "$T/src.raw" "$T/base.vmdk" &&
	qemu-img create -q -f vmdk -b base.vmdk -F vmdk "$T/ov.vmdk" &&
	"$IMGTOOL" info "$T/ov.vmdk" 2>/dev/null | grep -q "file format: vmdk" &&
	start_server "$T/c.out" --socket "$T/c.sock" "$T/ov.vmdk"; then
	nbdcopy "nbd+unix:///?socket=$T/c.sock" - | cmp -s - "$T/src.raw"
	check "chain: overlay reads the base's data" test $? = 0
	qemu-io -f raw -c 'write -P 0x77 0 64k' \
		"nbd+unix:///?socket=$T/c.sock" >/dev/null 2>&1
	check "chain: write through the overlay (qemu-io)" test $? = 0
	check "chain: server stops cleanly" stop_server
	qemu-img convert -q -O raw "$T/base.vmdk" "$T/base.back"
	check "chain: the base is untouched" cmp -s "$T/base.back" "$T/src.raw"
	qemu-img convert -q -O raw "$T/ov.vmdk" "$T/ov.back"
	check "chain: the overlay holds the write" \
		cmp -s <(head -c 65536 "$T/ov.back") <(head -c 65536 /dev/zero | tr '\0' '\167')
fi

# ---- TLS ------------------------------------------------------------------
mkdir "$T/pki"
if openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
	-keyout "$T/pki/key.pem" -out "$T/pki/ca-cert.pem" 2>/dev/null &&
	start_server "$T/tls.out" --socket "$T/tls.sock" \
		--tls-cert "$T/pki/ca-cert.pem" --tls-key "$T/pki/key.pem" \
		"$T/one.raw"; then
	check "tls: banner uses nbds" grep -q 'nbds+unix://' "$T/tls.out"
	if nbdinfo "nbd+unix:///?socket=$T/tls.sock" >/dev/null 2>&1; then
		fail "tls: a client without TLS is refused"
	else
		ok "tls: a client without TLS is refused"
	fi
	nbdcopy "nbds+unix:///?socket=$T/tls.sock&tls-certificates=$T/pki&tls-verify-peer=false" - |
		cmp -s - "$T/src.raw"
	check "tls: nbdcopy over TLS is byte-identical" test $? = 0
	check "tls: server stops cleanly" stop_server
else
	fail "tls: server starts"
fi

# ---- daemon, pidfile, errors --------------------------------------------
# relative paths: the daemon changes to / but still cleans up after itself
if (cd "$T" && "$IMGTOOL" serve --daemon --pidfile pid --socket d.sock \
	one.raw >"$T/d.out"); then
	pid=$(cat "$T/pid" 2>/dev/null)
	check "daemon: pidfile names a running server" kill -0 "$pid"
	size=$(nbdinfo --size "nbd+unix:///?socket=$T/d.sock")
	check "daemon: serves" test "$size" = 67108864
	kill -TERM "$pid"
	for _ in $(seq 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
	check "daemon: exits on SIGTERM and removes its pidfile" test ! -e "$T/pid"
	check "daemon: and its socket" test ! -e "$T/d.sock"
else
	fail "daemon: starts"
fi
"$IMGTOOL" serve --socket "$T/x.sock" "$T/missing.vdi" 2>"$T/err"
rc=$?
check "error: missing image -> exit 1 with one line" \
	test $rc = 1 -a "$(wc -l <"$T/err")" = 1
"$IMGTOOL" serve --daemon --socket "$T/x.sock" "$T/missing.vdi" 2>/dev/null
check "error: --daemon reports the failure in its exit status" test $? = 1
"$IMGTOOL" serve 2>/dev/null
check "error: no image is a usage error" test $? = 2

# ---- snapshots served read-only (FILE@TAG, -l TAG) ----------------------
# The oracle: qemu-img reads the snapshot itself (the layer file, or the
# qcow2 internal snapshot with -l) and imgtool compare checks nbdcopy's copy.
head -c 16M /dev/urandom >"$T/s-old.raw"
cp "$T/s-old.raw" "$T/s-new.raw"
dd if=/dev/urandom of="$T/s-new.raw" bs=1M seek=3 count=5 conv=notrunc status=none
for fmt in vdi vmdk qcow2; do
	d=$T/snap.$fmt
	rm -rf "$d" "$d.snapshots"
	qemu-img convert -q -O $fmt "$T/s-old.raw" "$d"
	"$IMGTOOL" snapshot create -q "$d" s1 &&
		"$IMGTOOL" convert -q -n -O $fmt "$T/s-new.raw" "$d" ||
		fail "$fmt: snapshot s1, then new data"
	sock=$T/snap-$fmt.sock
	# one qcow2 file holds both: a read-write open of it is exclusive
	ro=
	[ $fmt = qcow2 ] && ro=-r
	if ! start_server "$T/snap.out" --socket "$sock" $ro "$d@s1" "$d"; then
		fail "$fmt: serve DISK@TAG starts"
		continue
	fi
	suri="nbd+unix:///snap.$fmt@s1?socket=$sock"
	curi="nbd+unix:///snap.$fmt?socket=$sock"
	check "$fmt: banner names the snapshot export DISK@TAG" \
		grep -q "^serving $d@s1 at $suri\$" "$T/snap.out"
	nbdinfo "$suri" >"$T/sinfo" 2>&1
	check "$fmt: nbdinfo: the snapshot export is read-only, 16 MiB" \
		grep -q 'is_read_only: true' "$T/sinfo" -a -n "$(grep 'export-size: 16777216' "$T/sinfo")"
	rm -f "$T/s1.raw" "$T/cur.raw" "$T/q1.raw"
	nbdcopy "$suri" "$T/s1.raw" && nbdcopy "$curi" "$T/cur.raw"
	nbdcopy "$T/s-new.raw" "$suri" 2>/dev/null
	check "$fmt: writing to the snapshot export is refused" test $? != 0
	"$IMGTOOL" snapshot delete -q "$d" s1 2>"$T/err"
	check "$fmt: snapshot delete while s1 is served: refused in one line" \
		test $? = 1 -a "$(wc -l <"$T/err")" = 1
	check "$fmt: stops cleanly" stop_server
	# qemu-img reads the snapshot itself once the server let go of it
	if [ $fmt = qcow2 ]; then
		qemu-img convert -q -l snapshot.name=s1 -O raw "$d" "$T/q1.raw"
	else
		qemu-img convert -q -O raw "$d.snapshots/s1.$fmt" "$T/q1.raw"
	fi
	if "$IMGTOOL" compare -q "$T/s1.raw" "$T/q1.raw" && cmp -s "$T/s1.raw" "$T/s-old.raw" &&
		"$IMGTOOL" compare -q "$T/cur.raw" "$T/s-new.raw"; then
		ok "$fmt: nbdcopy of DISK@s1 equals qemu-img's read of the snapshot; DISK reads the new data"
	else
		fail "$fmt: snapshot export contents ($(cmp "$T/s1.raw" "$T/s-old.raw" 2>&1 | head -1))"
	fi
	rm -f "$T/s1.raw"
	if start_server "$T/snap.out" --socket "$sock" -r -l snapshot.name=s1 "$d"; then
		nbdcopy "nbd+unix:///snap.$fmt@s1?socket=$sock" "$T/s1.raw"
		check "$fmt: -l snapshot.name=s1 (qemu-nbd's form) serves the same" cmp -s "$T/s1.raw" "$T/s-old.raw"
		stop_server
	else
		fail "$fmt: serve -l starts"
	fi
	"$IMGTOOL" serve --socket "$sock" "$d@nope" 2>"$T/err"
	check "$fmt: an unknown snapshot: exit 1, one line" \
		test $? = 1 -a "$(wc -l <"$T/err")" = 1 -a -n "$(grep "no snapshot named 'nope'" "$T/err")"
done
# A snapshot operation a crash interrupted (the marker it leaves): serving
# the disk is refused in one line until check -r finishes the operation.
d=$T/snap.vdi
echo "delete s1" >"$d.snapshots/pending"
"$IMGTOOL" serve --socket "$T/int.sock" "$d" 2>"$T/err"
rc=$?
check "an interrupted snapshot delete: serve refuses in one line ($(cat "$T/err"))" \
	test $rc = 1 -a "$(wc -l <"$T/err")" = 1 -a -n "$(grep interrupted "$T/err")"
"$IMGTOOL" check -r all "$d" >"$T/check" 2>&1
if grep -q "Finished an interrupted snapshot" "$T/check" && [ ! -e "$d.snapshots/pending" ] &&
	! "$IMGTOOL" snapshot list "$d" | grep -q '^s1 ' && start_server "$T/snap.out" --socket "$T/int.sock" "$d"; then
	nbdcopy "nbd+unix:///snap.vdi?socket=$T/int.sock" - | cmp -s - "$T/s-new.raw"
	check "check -r finishes the delete; the disk is served with its data" test $? = 0
	stop_server
else
	fail "check -r after an interrupted delete: $(cat "$T/check")"
fi

finish
