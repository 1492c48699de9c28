#!/bin/bash
# End-to-end: imgtool create/info on raw images, error handling, and a
# cross-check with qemu-img.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP

# create + info --output=json
if "$IMGTOOL" create -q -f raw "$T/x.img" 1G &&
	"$IMGTOOL" info --output=json "$T/x.img" >"$T/x.json" &&
	python3 -m json.tool "$T/x.json" >/dev/null &&
	python3 - "$T/x.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["virtual-size"] == 1073741824, d
assert d["format"] == "raw", d
assert d["dirty-flag"] is False, d
assert d["actual-size"] < 1 << 20, d
PY
then ok "create raw 1G, info json valid with virtual-size and format"; else fail "create raw 1G, info json"; fi

# the file is sparse and has the right size
check "raw create is sparse" test "$(stat -c %s "$T/x.img")" = 1073741824 -a "$(stat -c %b "$T/x.img")" -lt 64

# qemu-img agrees
if command -v qemu-img >/dev/null; then
	qs=$(qemu-img info --output=json "$T/x.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
	check "qemu-img info agrees on size" test "$qs" = 1073741824
	qemu-img create -q -f raw "$T/q.img" 300M
	dd if=/dev/urandom of="$T/q.img" bs=64k count=3 seek=7 conv=notrunc status=none
	if "$IMGTOOL" info "$T/q.img" >"$T/q.txt" && grep -q '^file format: raw$' "$T/q.txt" &&
		grep -q '^virtual size: 300 MiB (314572800 bytes)$' "$T/q.txt"; then
		ok "info on a qemu-img-created raw image"
	else
		fail "info on a qemu-img-created raw image"
	fi
else
	skip "qemu-img cross-check" "qemu-img not installed"
fi

# one-line errors, non-zero exit, nothing written
errcase() { # NAME EXPECTED-SUBSTRING COMMAND...
	local name=$1 want=$2
	shift 2
	"$@" >"$T/out" 2>"$T/err"
	local rc=$?
	if [ $rc -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q -- "$want" "$T/err" &&
		grep -q '^imgtool: ' "$T/err"; then
		ok "$name (exit $rc: $(cat "$T/err"))"
	else
		fail "$name (exit $rc, stderr: $(cat "$T/err"))"
	fi
}
errcase "missing file" "missing.img: No such file or directory" "$IMGTOOL" info "$T/missing.img"
errcase "garbage size 12Q" "invalid size '12Q'" "$IMGTOOL" create -f raw "$T/bad.img" 12Q
check "garbage size writes nothing" test ! -e "$T/bad.img"
errcase "unknown format (create)" "unknown format 'qcow9'" "$IMGTOOL" create -f qcow9 "$T/bad.img" 1M
check "unknown format writes nothing" test ! -e "$T/bad.img"
errcase "unknown format (info -f)" "unknown format 'qcow9'" "$IMGTOOL" info -f qcow9 "$T/x.img"
mkdir "$T/dir"
errcase "directory as image" "dir: is a directory" "$IMGTOOL" info "$T/dir"
errcase "unknown option for format" "unknown option 'bogus' for format raw" "$IMGTOOL" create -f raw -o bogus=1 "$T/bad.img" 1M
check "unknown option writes nothing" test ! -e "$T/bad.img"
errcase "unknown command" "unknown command 'frobnicate'" "$IMGTOOL" frobnicate

# exit codes
"$IMGTOOL" create "$T/u.img" >/dev/null 2>&1
check "usage error exits 2" test $? -eq 2
"$IMGTOOL" --help >/dev/null
check "--help exits 0" test $? -eq 0
"$IMGTOOL" info --help | grep -q '^Usage: imgtool info'
check "info --help prints usage" test $? -eq 0
"$IMGTOOL" help create | grep -q '^Usage: imgtool create'
check "help create prints usage" test $? -eq 0
"$IMGTOOL" --version | grep -Eq '^imgtool [0-9]+\.[0-9]+\.[0-9]+'
check "--version" test $? -eq 0

# sizes with suffixes and sectors
"$IMGTOOL" create -q "$T/s.img" 2048s && check "size in sectors (2048s = 1 MiB)" test "$(stat -c %s "$T/s.img")" = 1048576
"$IMGTOOL" create -q "$T/s2.img" 1.5M && check "decimal size 1.5M" test "$(stat -c %s "$T/s2.img")" = 1572864

# preallocation=full allocates
"$IMGTOOL" create -q -o preallocation=full "$T/p.img" 4M &&
	check "preallocation=full allocates" test "$(stat -c %b "$T/p.img")" -ge 8192

# locking: a second writer is refused while a writer holds the image
if command -v python3 >/dev/null; then
	python3 - "$T/x.img" <<'PY' &
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
# F_OFD_SETLK = 37; struct flock: short type, short whence, off_t start, off_t len, pid_t pid
fl = struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0)
fcntl.fcntl(fd, 37, fl)
open(sys.argv[1] + ".locked", "w").close()
time.sleep(120)
PY
	holder=$!
	# generous: a loaded machine may take seconds to start python
	for _ in $(seq 300); do [ -e "$T/x.img.locked" ] && break; sleep 0.1; done
	errcase "locked image refused" "in use by another process" "$IMGTOOL" info "$T/x.img"
	"$IMGTOOL" info -U "$T/x.img" >/dev/null 2>&1
	check "locked image opens with -U" test $? -eq 0
	kill "$holder" 2>/dev/null
	wait "$holder" 2>/dev/null
fi

# make install into a staging dir, then build a program against the
# installed header and library with pkg-config, statically and shared.
san=
[ "$B" = build/san ] && san=1
if make -s install SANITIZE=$san PREFIX=/usr DESTDIR="$T/inst" >"$T/install.log" 2>&1; then
	ok "make install DESTDIR"
	missing=
	for f in usr/bin/imgtool usr/lib/libimg.a usr/lib/libimg.so usr/lib/libimg.so.0 \
		usr/include/img.h usr/lib/pkgconfig/libimg.pc; do
		[ -e "$T/inst/$f" ] || missing="$missing $f"
	done
	check "installed files present${missing:+ (missing:$missing)}" test -z "$missing"
	check "pkg-config file has the install prefix" grep -q '^prefix=/usr$' "$T/inst/usr/lib/pkgconfig/libimg.pc"
	cat >"$T/user.c" <<'C'
#include <img.h>
#include <stdio.h>
int main(int argc, char **argv)
{
	char err[IMG_ERRMSG_MAX];
	struct img *img;

	if (img_open(&img, argv[1], NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	printf("%s %llu\n", img_format(img), (unsigned long long)img_size(img));
	return img_close(img) < 0;
}
C
	export PKG_CONFIG_SYSROOT_DIR=$T/inst PKG_CONFIG_LIBDIR=$T/inst/usr/lib/pkgconfig
	sanflags=
	[ -n "$san" ] && sanflags="-fsanitize=address,undefined"
	# shellcheck disable=SC2046
	if cc $sanflags -o "$T/user-static" "$T/user.c" $(pkg-config --cflags libimg) \
		"$T/inst/usr/lib/libimg.a" $(pkg-config --static --libs-only-l libimg | sed 's/-limg//') -lz -lcrypto -pthread 2>"$T/cc.err" &&
		out=$("$T/user-static" "$T/x.img") && [ "$out" = "raw 1073741824" ]; then
		ok "program linked statically against the installed libimg.a opens an image"
	else
		fail "static link against installed libimg ($(head -c 300 "$T/cc.err") ${out:-})"
	fi
	# shellcheck disable=SC2046
	if cc $sanflags -o "$T/user-shared" "$T/user.c" $(pkg-config --cflags --libs libimg) 2>"$T/cc.err" &&
		out=$(LD_LIBRARY_PATH=$T/inst/usr/lib "$T/user-shared" "$T/x.img") && [ "$out" = "raw 1073741824" ]; then
		ok "program linked with pkg-config against libimg.so opens an image"
	else
		fail "shared link against installed libimg ($(head -c 300 "$T/cc.err") ${out:-})"
	fi
	unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR
else
	fail "make install DESTDIR ($(tail -3 "$T/install.log"))"
fi

finish
