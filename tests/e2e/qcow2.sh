#!/bin/bash
# End-to-end: the qcow2 driver against qemu-img/qemu-io and libqcow's
# qcowinfo.  Round trips both ways (v2 and v3, cluster sizes 512 B-2 MiB,
# refcount widths 1-64 bits, odd sizes, random sparse data), backing
# chains both ways (and over other formats), writes over snapshots,
# zero clusters, compressed (zlib, zstd), extended L2 and external data
# file images written by QEMU, check and repair, resize, refusals.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib.bash
e2e_tmpdir
T=$E2E_TMP
MiB=1048576

if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
	skip "qcow2" "needs qemu-img and qemu-io (Debian qemu-utils)"
	finish
	exit 0
fi
I=$IMGTOOL

# A sparse raw file: random runs at random offsets, zero runs inside them,
# data in the last 3 sectors.
mkpattern() { # FILE SIZE SEED
	python3 - "$@" <<'PY'
import random, sys
name, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
with open(name, "wb") as f:
    f.truncate(size)
    for _ in range(12):
        n = rnd.randrange(1, min(384 * 1024, size // 4))
        off = rnd.randrange(0, size - n) // 512 * 512
        f.seek(off)
        f.write(rnd.randbytes(n))
        z = rnd.randrange(0, n)
        f.seek(off + rnd.randrange(0, n - z + 1))
        f.write(bytes(z))
    f.seek(size - 1536)
    f.write(rnd.randbytes(1536))
PY
}
qcheck() { qemu-img check -q "$1" >/dev/null 2>&1; }
same() { qemu-img compare -q "$1" "$2" >/dev/null 2>&1; }

# ourio IMG QEMU-IO-ARGS...: qemu-io's commands written through imgtool
# (imgtool serve, qemu-io as the NBD client): our write path, driven by
# an independent tool.  qio does the same with QEMU's own driver.
ourio() {
	local img=$1 rc
	shift
	rm -f "$T/srv.sock"
	: >"$T/io.out"
	if ! start_server "$T/srv.out" --socket "$T/srv.sock" "$img" 2>/dev/null; then
		stop_server
		return 1
	fi
	qemu-io -f raw "$@" "$SRV_URI" >"$T/io.out" 2>&1
	rc=$?
	grep -q "error\|failed" "$T/io.out" && rc=1
	stop_server || rc=1
	return $rc
}
qio() {
	local img=$1
	shift
	qemu-io "$@" "$img" >/dev/null 2>&1
}

# ---- images made by QEMU 7.2 (tests/fixtures/qcow2/PROVENANCE.md) -------
FIX=tests/fixtures/qcow2
while IFS=$'\t' read -r file want; do
	cp "$FIX/$file" "$T/fx.qcow2"
	[ "$file" = qemu72-extl2-overlay.qcow2 ] && cp "$FIX/qemu72-v3-64k.qcow2" "$T/"
	before=$(sha256sum <"$T/fx.qcow2")
	if "$I" convert -q -O raw "$T/fx.qcow2" "$T/fx.raw" &&
		[ "$(sha256sum "$T/fx.raw" | cut -d' ' -f1)" = "$want" ] &&
		[ "$before" = "$(sha256sum <"$T/fx.qcow2")" ]; then
		ok "QEMU 7.2 fixture $file reads as qemu-img reads it"
	else
		fail "QEMU 7.2 fixture $file"
	fi
	rm -f "$T/fx.qcow2" "$T/fx.raw"
done <"$FIX/expected.tsv"
cp "$FIX/qemu72-dirty-lazy.qcow2" "$T/dl.qcow2"
if "$I" check "$T/dl.qcow2" >/dev/null 2>&1; [ $? -le 3 ] &&
	"$I" check -q -r all "$T/dl.qcow2" && qcheck "$T/dl.qcow2" &&
	python3 -c 'import sys; f=open(sys.argv[1],"rb"); f.seek(72); sys.exit(f.read(8)[7] & 1)' "$T/dl.qcow2"; then
	ok "check -r all on QEMU's dirty lazy-refcount image clears the dirty bit; qemu-img check clean"
else
	fail "check -r all on a dirty image"
fi

# ---- round trips: ours -> qemu, qemu -> ours ----------------------------
seed=1
while read -r compat cs rb size; do
	opts="compat=$compat,cluster_size=$cs,refcount_bits=$rb"
	name="compat=$compat cluster=$cs refcount=$rb size=$size"
	mkpattern "$T/p.raw" "$size" $seed
	seed=$((seed + 1))
	rm -f "$T/ours.qcow2" "$T/qemu.qcow2" "$T/back.raw"
	if "$I" convert -q -O qcow2 -o "$opts" "$T/p.raw" "$T/ours.qcow2" &&
		qcheck "$T/ours.qcow2" && same "$T/p.raw" "$T/ours.qcow2" &&
		qemu-img info "$T/ours.qcow2" | grep -q "cluster_size: $cs"; then
		ok "imgtool writes, qemu-img reads and checks clean: $name"
	else
		fail "imgtool writes, qemu-img reads: $name"
	fi
	if qcowinfo "$T/ours.qcow2" >"$T/qi.txt" 2>&1 &&
		grep -Eq "Media size[^0-9]*$size bytes|Media size.*\($size bytes\)" "$T/qi.txt"; then
		ok "qcowinfo agrees on what imgtool wrote: $name"
	elif grep -qi "unsupported\|not supported" "$T/qi.txt"; then
		skip "qcowinfo $name" "$(head -1 "$T/qi.txt")"
	else
		fail "qcowinfo on imgtool's image: $name ($(grep -i 'media size\|error' "$T/qi.txt" | head -2 | tr '\n' ' '))"
	fi
	if qemu-img convert -O qcow2 -o "$opts" "$T/p.raw" "$T/qemu.qcow2" 2>/dev/null &&
		"$I" convert -q -O raw "$T/qemu.qcow2" "$T/back.raw" &&
		cmp -s "$T/p.raw" "$T/back.raw" &&
		"$I" check -q "$T/qemu.qcow2"; then
		ok "qemu-img writes, imgtool reads and checks clean: $name"
	else
		fail "qemu-img writes, imgtool reads: $name"
	fi
done <<'LIST'
1.1 65536 16 67110400
0.10 65536 16 33555968
1.1 512 1 4196352
1.1 512 64 8390656
1.1 1024 2 8390656
1.1 4096 4 16778752
1.1 16384 8 33555968
1.1 131072 32 67110400
1.1 2097152 64 134219264
0.10 4096 16 16778752
LIST

# Writing into an image we wrote (in place and fresh clusters).
mkpattern "$T/a.raw" $((64 * MiB)) 40
mkpattern "$T/b.raw" $((64 * MiB)) 41
"$I" convert -q -O qcow2 -o cluster_size=4096 "$T/a.raw" "$T/w.qcow2"
if "$I" convert -q -n -f raw -O qcow2 "$T/b.raw" "$T/w.qcow2" &&
	qcheck "$T/w.qcow2" && same "$T/b.raw" "$T/w.qcow2"; then
	ok "convert -n over an existing qcow2 (in-place and fresh clusters)"
else
	fail "convert -n over an existing qcow2"
fi

# ---- qemu-io writes over our image, our reads ---------------------------
"$I" create -q -f qcow2 "$T/io.qcow2" 32M
qemu-io -c "write -P 0xa5 1000k 300k" -c "write -z 4M 1M" -c "write -P 0x3c 31M 1M" \
	-c "discard 1024k 64k" "$T/io.qcow2" >/dev/null
qemu-img convert -O raw "$T/io.qcow2" "$T/io-q.raw"
if "$I" convert -q -O raw "$T/io.qcow2" "$T/io-o.raw" && cmp -s "$T/io-q.raw" "$T/io-o.raw"; then
	ok "qemu-io writes, zeroes and discards on imgtool's image read back the same"
else
	fail "qemu-io writes on imgtool's image"
fi

# ---- backing chains both ways -------------------------------------------
mkpattern "$T/base.raw" $((48 * MiB)) 50
mkpattern "$T/top.raw" $((48 * MiB)) 51
qemu-img convert -O qcow2 "$T/base.raw" "$T/qbase.qcow2"
W=(-c "write -P 0x11 3M 200k" -c "write -P 0x22 47M 1M" -c "write -z 10M 2M"
	-c "write -P 0x5a 70000 1536" -c "write -P 0x6b 20M 3584" -c "discard 30M 1M")
"$I" create -q -f qcow2 -b qbase.qcow2 -F qcow2 "$T/ov.qcow2"
qemu-img create -q -f qcow2 -b "$T/qbase.qcow2" -F qcow2 "$T/qov.qcow2"
qio "$T/qov.qcow2" "${W[@]}"
if ourio "$T/ov.qcow2" "${W[@]}" &&
	qemu-img info "$T/ov.qcow2" | grep -q "backing file: qbase.qcow2" &&
	qemu-img info "$T/ov.qcow2" | grep -q "backing file format: qcow2" &&
	qcheck "$T/ov.qcow2" && same "$T/ov.qcow2" "$T/qov.qcow2"; then
	ok "imgtool overlay over a QEMU base (partial-cluster copy-on-write, zeroes, discard): qemu-img reads what QEMU's own writes give"
else
	fail "imgtool overlay over a QEMU base: $(cat "$T/io.out" "$T/srv.out.err" | head -3 | tr '\n' ' ')"
fi
qemu-img convert -O raw "$T/qov.qcow2" "$T/qov-q.raw"
if "$I" convert -q -O raw "$T/qov.qcow2" "$T/qov-o.raw" && cmp -s "$T/qov-q.raw" "$T/qov-o.raw"; then
	ok "QEMU overlay (with zero clusters over data) reads as qemu-img reads it"
else
	fail "QEMU overlay read"
fi
# Three layers, the bottom one a VDI.
"$I" convert -q -O vdi "$T/base.raw" "$T/base.vdi"
qemu-img create -q -f qcow2 -b base.vdi -F vdi "$T/mid.qcow2"
qio "$T/mid.qcow2" -c "write -P 0x33 5M 3M"
"$I" create -q -f qcow2 -b mid.qcow2 "$T/top.qcow2"
qio "$T/top.qcow2" -c "write -P 0x44 6M 64k"
qemu-img convert -O raw "$T/top.qcow2" "$T/chain-q.raw"
if "$I" convert -q -O raw "$T/top.qcow2" "$T/chain-o.raw" && cmp -s "$T/chain-q.raw" "$T/chain-o.raw" &&
	"$I" map "$T/top.qcow2" >"$T/map.txt" && grep -q . "$T/map.txt"; then
	ok "qcow2 -> qcow2 -> VDI chain reads as qemu-img reads it; map runs"
else
	fail "qcow2 -> qcow2 -> VDI chain"
fi
# Every cluster size, both versions: the same writes through us and QEMU.
for o in compat=0.10,cluster_size=512 compat=1.1,cluster_size=1024,refcount_bits=1 \
	compat=1.1,cluster_size=2M,refcount_bits=64 compat=0.10,cluster_size=65536; do
	rm -f "$T/o1.qcow2" "$T/o2.qcow2"
	"$I" create -q -f qcow2 -o "$o" -b qbase.qcow2 -F qcow2 "$T/o1.qcow2"
	qemu-img create -q -f qcow2 -o "$o" -b "$T/qbase.qcow2" -F qcow2 "$T/o2.qcow2"
	qio "$T/o2.qcow2" "${W[@]}"
	if ourio "$T/o1.qcow2" "${W[@]}" && qcheck "$T/o1.qcow2" && same "$T/o1.qcow2" "$T/o2.qcow2"; then
		ok "overlay writes through imgtool match QEMU's ($o)"
	else
		fail "overlay writes ($o): $(qemu-img check "$T/o1.qcow2" 2>&1 | tail -2 | tr '\n' ' ')"
	fi
done

# ---- writes over internal snapshots (copy-on-write of shared clusters) --
qemu-img convert -O qcow2 -o cluster_size=4096 "$T/base.raw" "$T/snap.qcow2"
qemu-img snapshot -c s1 "$T/snap.qcow2"
cp "$T/snap.qcow2" "$T/qsnap.qcow2"
qio "$T/qsnap.qcow2" "${W[@]}"
if ! ourio "$T/snap.qcow2" "${W[@]}"; then
	fail "writes over a QEMU snapshot through imgtool serve: $(cat "$T/io.out" "$T/srv.out.err" | head -3 | tr '\n' ' ')"
elif ! qcheck "$T/snap.qcow2"; then
	fail "writes over a QEMU snapshot: qemu-img check: $(qemu-img check "$T/snap.qcow2" 2>&1 | head -3 | tr '\n' ' ')"
elif ! qemu-img convert -l s1 -O raw "$T/snap.qcow2" "$T/s1.raw" || ! cmp -s "$T/s1.raw" "$T/base.raw"; then
	fail "writes over a QEMU snapshot: the snapshot's data changed ($(cmp "$T/s1.raw" "$T/base.raw" 2>&1 | head -1))"
elif ! same "$T/snap.qcow2" "$T/qsnap.qcow2"; then
	fail "writes over a QEMU snapshot: not what QEMU's own writes give ($(qemu-img compare "$T/snap.qcow2" "$T/qsnap.qcow2" 2>&1 | head -1))"
else
	ok "writes over a QEMU snapshot copy shared clusters; the snapshot keeps its data; check clean"
fi

# ---- internal snapshots: imgtool snapshot and convert -l ----------------
mkpattern "$T/sa.raw" $((16 * MiB)) 80
mkpattern "$T/sb.raw" $((16 * MiB)) 81
"$I" convert -q -O qcow2 "$T/sa.raw" "$T/is.qcow2"
if "$I" snapshot create -q "$T/is.qcow2" first && [ ! -e "$T/is.qcow2.snapshots" ] &&
	qemu-img snapshot -l "$T/is.qcow2" | grep -q " first " && qcheck "$T/is.qcow2" &&
	"$I" convert -q -n -f raw -O qcow2 "$T/sb.raw" "$T/is.qcow2" && qcheck "$T/is.qcow2" &&
	same "$T/is.qcow2" "$T/sb.raw" &&
	qemu-img convert -l first -O raw "$T/is.qcow2" "$T/is1.raw" && cmp -s "$T/is1.raw" "$T/sa.raw"; then
	ok "snapshot create keeps the state inside the qcow2 (qemu-img lists and reads it); later writes copy on write"
else
	fail "internal snapshot create: $(qemu-img check "$T/is.qcow2" 2>&1 | tail -3 | tr '\n' ' ')"
fi
if "$I" snapshot list "$T/is.qcow2" | grep -q "first" &&
	"$I" convert -q -l first -O raw "$T/is.qcow2" "$T/is2.raw" && cmp -s "$T/is2.raw" "$T/sa.raw"; then
	ok "snapshot list shows it; convert -l reads it"
else
	fail "snapshot list / convert -l"
fi
if "$I" snapshot revert -q "$T/is.qcow2" first && qcheck "$T/is.qcow2" && same "$T/is.qcow2" "$T/sa.raw" &&
	"$I" check -q "$T/is.qcow2"; then
	ok "snapshot revert: the disk reads the snapshot again; both checks clean"
else
	fail "snapshot revert: $(qemu-img check "$T/is.qcow2" 2>&1 | tail -3 | tr '\n' ' ')"
fi
"$I" convert -q -n -f raw -O qcow2 "$T/sb.raw" "$T/is.qcow2"
if "$I" snapshot delete -q "$T/is.qcow2" first && qcheck "$T/is.qcow2" && same "$T/is.qcow2" "$T/sb.raw" &&
	! qemu-img snapshot -l "$T/is.qcow2" | grep -q first && "$I" check -q "$T/is.qcow2"; then
	ok "snapshot delete: clusters released, COPIED flags restored (qemu-img check clean)"
else
	fail "snapshot delete: $(qemu-img check "$T/is.qcow2" 2>&1 | tail -3 | tr '\n' ' ')"
fi
cp tests/fixtures/qcow2/qemu72-snapshot.qcow2 "$T/qs.qcow2"
qemu-img convert -l before -O raw "$T/qs.qcow2" "$T/qs-q.raw"
if "$I" convert -q -l before -O raw "$T/qs.qcow2" "$T/qs-o.raw" && cmp -s "$T/qs-q.raw" "$T/qs-o.raw" &&
	"$I" snapshot revert -q "$T/qs.qcow2" before && qcheck "$T/qs.qcow2" && same "$T/qs.qcow2" "$T/qs-q.raw" &&
	"$I" snapshot delete -q "$T/qs.qcow2" before && qcheck "$T/qs.qcow2"; then
	ok "a snapshot QEMU took: convert -l, revert and delete; qemu-img check clean"
else
	fail "QEMU's snapshot: $(qemu-img check "$T/qs.qcow2" 2>&1 | tail -3 | tr '\n' ' ')"
fi

# ---- compressed, zstd, extended L2, external data file ------------------
mkpattern "$T/c.raw" $((48 * MiB)) 60
qemu-img convert -c -O qcow2 "$T/c.raw" "$T/z.qcow2"
if "$I" convert -q -O raw "$T/z.qcow2" "$T/z.raw" && cmp -s "$T/c.raw" "$T/z.raw"; then
	ok "zlib-compressed image written by qemu-img reads back"
else
	fail "zlib-compressed read"
fi
if qemu-img convert -c -O qcow2 -o compression_type=zstd "$T/c.raw" "$T/zs.qcow2" 2>/dev/null; then
	if "$I" convert -q -O raw "$T/zs.qcow2" "$T/zs.raw" && cmp -s "$T/c.raw" "$T/zs.raw"; then
		ok "zstd-compressed image written by qemu-img reads back"
	else
		fail "zstd-compressed read"
	fi
else
	skip "zstd read" "this qemu-img has no zstd"
fi
# Compressed writing: convert -c on every core; QEMU reads and checks it.
for o in "" "-o cluster_size=4096" "-o compat=0.10,cluster_size=2M"; do
	rm -f "$T/oc.qcow2"
	if "$I" convert -q -c -O qcow2 $o "$T/c.raw" "$T/oc.qcow2" && qcheck "$T/oc.qcow2" &&
		same "$T/oc.qcow2" "$T/c.raw" &&
		qemu-img check "$T/oc.qcow2" | grep -q "[1-9][0-9.]*% compressed" &&
		[ "$(stat -c %s "$T/oc.qcow2")" -lt $((12 * MiB)) ]; then
		ok "convert -c ${o:-(defaults)}: compressed clusters qemu-img reads, check clean ($(stat -c %s "$T/oc.qcow2") bytes)"
	else
		fail "convert -c $o: $(qemu-img check "$T/oc.qcow2" 2>&1 | tail -3 | tr '\n' ' ')"
	fi
done
cp "$T/oc.qcow2" "$T/oc2.qcow2"
qio "$T/oc2.qcow2" -c "write -P 0x42 100k 8k" -c "write -z 2M 64k"
cp "$T/oc.qcow2" "$T/oc3.qcow2"
if ourio "$T/oc3.qcow2" -c "write -P 0x42 100k 8k" -c "write -z 2M 64k" && qcheck "$T/oc3.qcow2" &&
	same "$T/oc2.qcow2" "$T/oc3.qcow2" && qcheck "$T/oc2.qcow2"; then
	ok "QEMU and imgtool write over imgtool's compressed clusters alike; both check clean"
else
	fail "writes over imgtool's compressed clusters"
fi
if ! "$I" convert -q -c -O vdi "$T/c.raw" "$T/novdi.vdi" 2>"$T/err" && [ "$(wc -l <"$T/err")" = 1 ] &&
	grep -q "compressed" "$T/err" && [ ! -e "$T/novdi.vdi" ]; then
	ok "convert -c to a format without compression is refused in one line"
else
	fail "convert -c -O vdi refusal: $(cat "$T/err")"
fi
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=65536 -b "$T/qbase.qcow2" -F qcow2 "$T/x.qcow2"
qemu-io -c "write -P 0x55 4k 4k" -c "write -P 0x66 1M 130k" -c "write -z 2M 8k" "$T/x.qcow2" >/dev/null
qemu-img convert -O raw "$T/x.qcow2" "$T/x-q.raw"
if "$I" convert -q -O raw "$T/x.qcow2" "$T/x-o.raw" && cmp -s "$T/x-q.raw" "$T/x-o.raw"; then
	ok "extended L2 (subclusters over a backing file) reads as qemu-img reads it"
else
	fail "extended L2 read"
fi
cp "$T/x.qcow2" "$T/x2.qcow2"
cp "$T/x.qcow2" "$T/x3.qcow2"
qio "$T/x3.qcow2" "${W[@]}"
if ourio "$T/x2.qcow2" "${W[@]}" && qcheck "$T/x2.qcow2" && same "$T/x2.qcow2" "$T/x3.qcow2"; then
	ok "writes into an extended-L2 image (partial subclusters) match QEMU's; check clean"
else
	fail "extended L2 write: $(qemu-img check "$T/x2.qcow2" 2>&1 | tail -2 | tr '\n' ' ')"
fi
# Writing over compressed clusters: fresh clusters, old ones released.
cp "$T/z.qcow2" "$T/z2.qcow2"
cp "$T/z.qcow2" "$T/z3.qcow2"
qio "$T/z3.qcow2" "${W[@]}"
if ourio "$T/z2.qcow2" "${W[@]}" && qcheck "$T/z2.qcow2" && same "$T/z2.qcow2" "$T/z3.qcow2"; then
	ok "writes over compressed clusters match QEMU's; check clean"
else
	fail "writes over compressed clusters: $(qemu-img check "$T/z2.qcow2" 2>&1 | tail -2 | tr '\n' ' ')"
fi
qemu-img create -q -f qcow2 -o data_file="$T/d.raw" "$T/df.qcow2" 16M
qemu-io -c "write -P 0x77 1M 2M" "$T/df.qcow2" >/dev/null
qemu-img convert -O raw "$T/df.qcow2" "$T/df-q.raw"
if "$I" convert -q -O raw "$T/df.qcow2" "$T/df-o.raw" && cmp -s "$T/df-q.raw" "$T/df-o.raw"; then
	ok "external data file reads as qemu-img reads it"
else
	fail "external data file read"
fi
if ! "$I" resize "$T/df.qcow2" 20M 2>"$T/err" && [ "$(wc -l <"$T/err")" = 1 ] && grep -q "external data file" "$T/err"; then
	ok "writing through an external data file is refused in one line"
else
	fail "external data file write refusal: $(cat "$T/err")"
fi

# ---- check and repair ---------------------------------------------------
# Edits: bump a free cluster's refcount (leak), zero an allocated one's
# (corruption), point an L1 entry past the end.
qedit() { # IMG WHAT
	python3 - "$@" <<'PY'
import struct, sys
path, what = sys.argv[1], sys.argv[2]
f = open(path, "r+b")
h = f.read(112)
cb = struct.unpack(">I", h[20:24])[0]; cs = 1 << cb
l1_off = struct.unpack(">Q", h[40:48])[0]
rt_off = struct.unpack(">Q", h[48:56])[0]
order = struct.unpack(">I", h[96:100])[0] if struct.unpack(">I", h[4:8])[0] >= 3 else 4
assert order == 4
f.seek(rt_off); rb0 = struct.unpack(">Q", f.read(8))[0]
def setref(c, v):
    f.seek(rb0 + c * 2); f.write(struct.pack(">H", v))
f.seek(0, 2); end = f.seek(0, 2)
if what == "leak":
    f.truncate(end + 2 * cs)
    setref(end // cs, 1); setref(end // cs + 1, 1)
elif what == "zero-ref":
    f.seek(l1_off); l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
    f.seek(l2)
    for i in range(cs // 8):
        e = struct.unpack(">Q", f.read(8))[0]
        if e & 0x00fffffffffffe00:
            setref((e & 0x00fffffffffffe00) // cs, 0); break
elif what == "l1-past-end":
    f.seek(l1_off); f.write(struct.pack(">Q", (1 << 63) | ((end + 100 * cs) // cs * cs)))
elif what == "incompat":
    f.seek(72); f.write(struct.pack(">Q", 1 << 9))
elif what == "snapshots":
    f.seek(60); f.write(struct.pack(">I", 0x7fffffff)); f.write(struct.pack(">Q", cs))
elif what == "l1-self":
    f.seek(l1_off); f.write(struct.pack(">Q", (1 << 63) | l1_off))
elif what == "reftable-past-end":
    f.seek(48); f.write(struct.pack(">Q", end + 64 * cs))
PY
}
mkpattern "$T/k.raw" $((16 * MiB)) 70
qemu-img convert -O qcow2 "$T/k.raw" "$T/k.qcow2"
cp "$T/k.qcow2" "$T/leak.qcow2"
qedit "$T/leak.qcow2" leak
"$I" check "$T/leak.qcow2" >"$T/out" 2>&1
rc=$?
qemu-img check "$T/leak.qcow2" >"$T/qout" 2>&1
if [ $rc = 3 ] && grep -q "2 leaked clusters" "$T/qout" && grep -qi "leak" "$T/out"; then
	ok "check finds leaked clusters (exit 3), as qemu-img check does"
else
	fail "check leaks: rc=$rc $(tr '\n' ' ' <"$T/out")"
fi
if "$I" check -q -r leaks "$T/leak.qcow2"; [ $? = 0 ] && qcheck "$T/leak.qcow2" && "$I" check -q "$T/leak.qcow2" &&
	same "$T/leak.qcow2" "$T/k.raw"; then
	ok "check -r leaks repairs them; qemu-img check clean afterwards; data intact"
else
	fail "check -r leaks"
fi
cp "$T/k.qcow2" "$T/zr.qcow2"
qedit "$T/zr.qcow2" zero-ref
"$I" check "$T/zr.qcow2" >"$T/out" 2>&1
rc=$?
if [ $rc = 2 ] && ! qcheck "$T/zr.qcow2"; then
	ok "check finds a refcount lower than the references (exit 2)"
else
	fail "check refcount corruption: rc=$rc"
fi
"$I" check -q -r all "$T/zr.qcow2"
if qcheck "$T/zr.qcow2" && same "$T/zr.qcow2" "$T/k.raw"; then
	ok "check -r all repairs the refcount; qemu-img check clean; data intact"
else
	fail "check -r all: $(qemu-img check "$T/zr.qcow2" 2>&1 | tail -3 | tr '\n' ' ')"
fi
cp "$T/k.qcow2" "$T/pe.qcow2"
qedit "$T/pe.qcow2" l1-past-end
"$I" check "$T/pe.qcow2" >"$T/out" 2>&1
rc=$?
if [ $rc = 2 ] && grep -qi "outside the file" "$T/out"; then
	ok "check finds an L1 entry past the end of the file"
else
	fail "check L1 past end: rc=$rc $(tr '\n' ' ' <"$T/out")"
fi
"$I" check -q -r all "$T/pe.qcow2"
if qcheck "$T/pe.qcow2" && "$I" check -q "$T/pe.qcow2"; then
	ok "check -r all clears the L1 entry past the end; qemu-img check clean"
else
	fail "repair of an L1 entry past the end"
fi
cp "$T/k.qcow2" "$T/self.qcow2"
qedit "$T/self.qcow2" l1-self
"$I" check "$T/self.qcow2" >"$T/out" 2>&1
rc=$?
if [ $rc = 2 ]; then
	ok "check finds an L1 entry pointing at the L1 table (overlap)"
else
	fail "check overlap: rc=$rc $(tr '\n' ' ' <"$T/out")"
fi

# Persistent bitmaps (QEMU's incremental backups): counted, not leaks.
qemu-img create -q -f qcow2 "$T/bm.qcow2" 16M
qio "$T/bm.qcow2" -c "write -P 1 0 1M"
if qemu-img bitmap --add "$T/bm.qcow2" bm0 2>/dev/null; then
	qio "$T/bm.qcow2" -c "write -P 2 4M 1M"
	if "$I" check -q "$T/bm.qcow2" && qcheck "$T/bm.qcow2"; then
		ok "check counts persistent bitmaps' clusters (no false leaks)"
	else
		fail "check with persistent bitmaps: $("$I" check "$T/bm.qcow2" 2>&1 | head -2 | tr '\n' ' ')"
	fi
else
	skip "persistent bitmaps" "qemu-img bitmap unavailable"
fi

# ---- hostile images: one line, no write ---------------------------------
for what in incompat snapshots reftable-past-end; do
	cp "$T/k.qcow2" "$T/h.qcow2"
	qedit "$T/h.qcow2" $what
	before=$(sha256sum <"$T/h.qcow2")
	"$I" info "$T/h.qcow2" >/dev/null 2>"$T/err"
	rc=$?
	"$I" convert -q -O raw "$T/h.qcow2" "$T/h.raw" 2>>"$T/err"
	rc2=$?
	if [ $rc != 0 ] && [ $rc2 != 0 ] && [ $rc -lt 128 ] && [ $rc2 -lt 128 ] &&
		[ "$(sort -u "$T/err" | wc -l)" = 1 ] && [ "$before" = "$(sha256sum <"$T/h.qcow2")" ]; then
		ok "hostile image ($what) refused in one line: $(head -1 "$T/err")"
	else
		fail "hostile image ($what): rc=$rc/$rc2 $(tr '\n' ' ' <"$T/err")"
	fi
done
if grep -q "unknown feature bit 9\|feature bit 9\|bit 9" "$T/err" 2>/dev/null || true; then :; fi
cp "$T/k.qcow2" "$T/h.qcow2"
qedit "$T/h.qcow2" incompat
if ! "$I" info "$T/h.qcow2" 2>&1 | grep -q "incompatible feature.*bit 9"; then
	fail "unknown incompatible feature named"
else
	ok "unknown incompatible feature refused with its bit"
fi
# LUKS: the fixture made by QEMU 7.2 (secret "pw").
cp tests/fixtures/qcow2/qemu72-luks.qcow2 "$T/luks.qcow2"
if ! "$I" info "$T/luks.qcow2" 2>"$T/err" && [ "$(wc -l <"$T/err")" = 1 ] && grep -q "LUKS" "$T/err" &&
	! "$I" convert -q -O raw "$T/luks.qcow2" "$T/luks.raw" 2>/dev/null; then
	ok "LUKS-encrypted image refused in one line"
else
	fail "LUKS refusal: $(cat "$T/err")"
fi

# A data entry pointing at the L1 table: writing there is refused, the
# L1 table stays as it was.
qemu-img convert -O qcow2 -o cluster_size=4096 "$T/k.raw" "$T/ov1.qcow2"
python3 - "$T/ov1.qcow2" <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); h = f.read(112)
l1 = struct.unpack(">Q", h[40:48])[0]
f.seek(l1); l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
f.seek(l2); f.write(struct.pack(">Q", (1 << 63) | l1))
PY
l1sum=$(python3 -c 'import struct,sys,hashlib; f=open(sys.argv[1],"rb"); h=f.read(112); o=struct.unpack(">Q",h[40:48])[0]; f.seek(o); print(hashlib.sha256(f.read(4096)).hexdigest())' "$T/ov1.qcow2")
head -c 4096 /dev/urandom >"$T/x.raw"
truncate -s $((16 * MiB)) "$T/x.raw"
if ! "$I" convert -q -n -O qcow2 "$T/x.raw" "$T/ov1.qcow2" 2>"$T/err" && [ "$(wc -l <"$T/err")" = 1 ] &&
	grep -q "would overwrite the L1 table" "$T/err" &&
	[ "$l1sum" = "$(python3 -c 'import struct,sys,hashlib; f=open(sys.argv[1],"rb"); h=f.read(112); o=struct.unpack(">Q",h[40:48])[0]; f.seek(o); print(hashlib.sha256(f.read(4096)).hexdigest())' "$T/ov1.qcow2")" ]; then
	ok "a write that would land on the L1 table is refused in one line; the table is intact"
else
	fail "overlap refusal: $(cat "$T/err")"
fi

# ---- dirty bit (lazy refcounts), resize, tools --------------------------
qemu-img create -q -f qcow2 -o lazy_refcounts=on "$T/lazy.qcow2" 16M
sh -c 'qemu-io -c "write -P 0x12 0 3M" -c abort "$1" >/dev/null 2>&1' sh "$T/lazy.qcow2" 2>/dev/null
dirty=$(python3 -c 'import sys,struct; f=open(sys.argv[1],"rb"); f.seek(72); print(struct.unpack(">Q", f.read(8))[0] & 1)' "$T/lazy.qcow2")
if [ "$dirty" = 1 ] && "$I" convert -q -O raw "$T/lazy.qcow2" "$T/lazy.raw" &&
	"$I" resize -q "$T/lazy.qcow2" 20M && qcheck "$T/lazy.qcow2" &&
	qemu-img compare -q "$T/lazy.qcow2" "$T/lazy.raw"; then
	ok "an image left dirty with lazy refcounts reads, and is repaired on a writable open"
else
	fail "dirty lazy-refcount image: $(qemu-img check "$T/lazy.qcow2" 2>&1 | tail -2 | tr '\n' ' ')"
fi
"$I" convert -q -O qcow2 -o cluster_size=512 "$T/k.raw" "$T/rs.qcow2"
if "$I" resize -q "$T/rs.qcow2" 3G && qcheck "$T/rs.qcow2" &&
	qemu-img info "$T/rs.qcow2" | grep -q "virtual size: 3 GiB" &&
	"$I" compare -q "$T/rs.qcow2" "$T/k.raw"; then
	ok "resize grows (L1 table moved), qemu-img check clean, data intact"
else
	fail "resize grow: $(qemu-img check "$T/rs.qcow2" 2>&1 | tail -2 | tr '\n' ' ')"
fi
if "$I" resize -q --shrink "$T/rs.qcow2" 16M && qcheck "$T/rs.qcow2" &&
	qemu-img info "$T/rs.qcow2" | grep -q "virtual size: 16 MiB" &&
	! "$I" resize -q --shrink "$T/rs.qcow2" 8M 2>/dev/null; then
	ok "resize shrinks an unused tail and refuses to cut off data"
else
	fail "resize shrink"
fi
if "$I" info "$T/k.qcow2" | grep -q "file format: qcow2" &&
	"$I" compare -q "$T/k.qcow2" "$T/k.raw" &&
	"$I" map --output=json "$T/k.qcow2" >"$T/m.json" &&
	qemu-img map --output=json "$T/k.qcow2" >"$T/qm.json" &&
	python3 - "$T/m.json" "$T/qm.json" <<'PY'
import json, sys
def norm(p):
    out = []
    for e in json.load(open(p)):
        for k in ("offset",):
            e.pop(k, None)
        e = {k: e[k] for k in ("start", "length", "data", "zero")}
        if out and out[-1]["data"] == e["data"] and out[-1]["zero"] == e["zero"] and out[-1]["start"] + out[-1]["length"] == e["start"]:
            out[-1]["length"] += e["length"]
        else:
            out.append(e)
    return out
a, b = norm(sys.argv[1]), norm(sys.argv[2])
sys.exit(0 if a == b else 1)
PY
then
	ok "info, compare and map (same extents as qemu-img map) on qcow2"
else
	fail "info/compare/map on qcow2"
fi

finish
