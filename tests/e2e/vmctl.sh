#!/bin/bash
# End-to-end for imgvm's named VMs on any host (no guest runs; those are in
# tests/e2e/vmm-jobs/control.bash): create / list / show / modify / delete,
# the disk create makes (checked by qemu-img), name validation, every
# definition a valid JSON file under concurrent rewrites, the write order
# (temporary file, fsync, rename, fsync of the folder, seen with strace),
# a running VM's folder is locked, the control commands' errors.  The
# control server itself is tested in tests/unit/test_vmm_control.c.
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/e2e/lib.bash

e2e_tmpdir
T=$E2E_TMP
export IMGVM_HOME=$T/home
cd "$T" || exit 1
head -c 1048576 /dev/zero >"$T/installer.iso"

# one line on stderr, exit 1, containing TEXT
refused() { # NAME TEXT ARGS...
	local name=$1 want=$2 out rc
	shift 2
	out=$("$IMGVM" "$@" 2>&1 </dev/null)
	rc=$?
	if [ $rc = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q -- "$want" <<<"$out"; then
		ok "$name: one line, exit 1"
	else
		fail "$name (rc=$rc): $out"
	fi
}

# ---- create ----
out=$("$IMGVM" create lab --memory 2G --disk new:vdi:20G --cdrom installer.iso 2>&1)
def=$IMGVM_HOME/lab/vm.json
if [ $? = 0 ] && [ -f "$def" ] &&
	python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
o = d["options"]
assert d["imgvm-vm"] == 1 and d["name"] == "lab", d
assert o["memory"] == "2G", o
assert o["disk"] == [sys.argv[2] + "/lab/lab.vdi,format=vdi"], o
assert o["cdrom"] == sys.argv[3] + "/installer.iso", o
' "$def" "$IMGVM_HOME" "$T"; then
	ok "create lab --memory 2G --disk new:vdi:20G --cdrom ISO: vm.json holds the options, paths absolute"
else
	fail "create: $out; $(cat "$def" 2>/dev/null)"
fi
if qemu-img check -f vdi "$IMGVM_HOME/lab/lab.vdi" >/dev/null 2>&1 &&
	[ "$(qemu-img info --output=json "$IMGVM_HOME/lab/lab.vdi" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = 21474836480 ] &&
	[ "$(stat -c %s "$IMGVM_HOME/lab/lab.vdi")" -lt 1048576000 ]; then
	ok "--disk new:vdi:20G: a dynamic 20 GiB VDI that qemu-img checks clean"
else
	fail "new disk: $(qemu-img info "$IMGVM_HOME/lab/lab.vdi" 2>&1 | tr '\n' ' ')"
fi
[ "$(stat -c %a "$IMGVM_HOME/lab")" = 700 ] && ok "the VM's folder is mode 0700" ||
	fail "folder mode $(stat -c %a "$IMGVM_HOME/lab")"

# default home: $XDG_DATA_HOME/imgvm, else ~/.local/share/imgvm
out=$(env -u IMGVM_HOME XDG_DATA_HOME="$T/xdg" "$IMGVM" create xdgvm --memory 1G 2>&1) &&
	out2=$(env -u IMGVM_HOME -u XDG_DATA_HOME HOME="$T/h" "$IMGVM" create homevm 2>&1)
if [ -f "$T/xdg/imgvm/xdgvm/vm.json" ] && [ -f "$T/h/.local/share/imgvm/homevm/vm.json" ]; then
	ok "without IMGVM_HOME: \$XDG_DATA_HOME/imgvm, else ~/.local/share/imgvm"
else
	fail "default home: $out $out2"
fi

# ---- list / show ----
"$IMGVM" create second --cpus 2 >/dev/null
list=$("$IMGVM" list)
if [ "$(wc -l <<<"$list")" = 2 ] && grep -Eq '^lab +stopped +memory 2G +cpus 1' <<<"$list" &&
	grep -Eq '^second +stopped +memory 512M +cpus 2' <<<"$list"; then
	ok "list: both VMs, stopped, memory and CPUs"
else
	fail "list: $list"
fi
if "$IMGVM" show lab | cmp -s - "$def"; then
	ok "show prints the definition as stored"
else
	fail "show: $("$IMGVM" show lab 2>&1)"
fi

# ---- modify ----
"$IMGVM" modify lab --memory 4G --cdrom none --cpus 2 --no-reboot
if python3 -c '
import json, sys
o = json.load(open(sys.argv[1]))["options"]
assert o["memory"] == "4G" and o["cpus"] == "2" and o["no-reboot"] is True, o
assert "cdrom" not in o and len(o["disk"]) == 1, o
' "$def"; then
	ok "modify --memory 4G --cdrom none --cpus 2 --no-reboot"
else
	fail "modify: $(cat "$def")"
fi
"$IMGVM" modify lab --disk new:vmdk:64M --disk "$IMGVM_HOME/lab/lab.vdi" --unset no-reboot
if [ -f "$IMGVM_HOME/lab/lab.vmdk" ] && python3 -c '
import json, sys
o = json.load(open(sys.argv[1]))["options"]
assert o["disk"] == [sys.argv[2] + "/lab/lab.vmdk,format=vmdk", sys.argv[2] + "/lab/lab.vdi"], o
assert "no-reboot" not in o, o
' "$def" "$IMGVM_HOME"; then
	ok "modify --disk ... --disk ...: the list is replaced (a new vmdk made), --unset removes a flag"
else
	fail "modify disks: $(cat "$def")"
fi
cp "$def" "$T/before.json"
refused "modify with a bad value leaves the definition" "memory" modify lab --memory 12Q
refused "modify with an unknown option" "unknown option" modify lab --frobnicate 1
cmp -s "$def" "$T/before.json" && ok "a refused modify changes nothing" || fail "refused modify changed vm.json"
refused "modify: a new disk with a bad size is not made" "bad size" modify lab --disk new:vdi:lots
ls "$IMGVM_HOME/lab" | grep -q 'lab-2' && fail "a disk left behind by a refused modify" ||
	ok "a refused modify leaves no disk behind"

# ---- names ----
refused "name with a slash" "not a VM name" create a/b
refused "name ../x" "not a VM name" create ../x
refused "hidden name" "not a VM name" create .x
refused "name of 65 characters" "not a VM name" create "$(printf 'a%.0s' $(seq 65))"
refused "a name that exists" "exists" create lab
refused "show an unknown VM" "no VM named" show nope
refused "start an unknown VM" "no VM named" start nope
refused "status of a VM that is not running" "not running" status lab
refused "insert without an ISO" "usage" insert lab
[ ! -e "$T/a" ] && [ ! -e "$IMGVM_HOME/../x" ] && ok "refused names created nothing" || fail "a refused name created a file"

# a damaged definition is refused, with its file named
mkdir -p "$IMGVM_HOME/broken"
printf '{"imgvm-vm": 1, "name": "broken", "options": {"memory": ' >"$IMGVM_HOME/broken/vm.json"
refused "a truncated vm.json" "broken/vm.json: not JSON: truncated" show broken
printf '{"imgvm-vm": 1, "name": "broken", "options": {"rm": "-rf"}}' >"$IMGVM_HOME/broken/vm.json"
refused "an unknown option in vm.json" "unknown option 'rm'" start broken
rm -rf "$IMGVM_HOME/broken"

# ---- atomic replace ----
# readers never see a partial file while modify rewrites it 200 times
(for i in $(seq 200); do "$IMGVM" modify second --memory $((512 + i))M || echo BAD; done) >"$T/writer.out" 2>&1 &
writer=$!
bad=0 reads=0
while kill -0 $writer 2>/dev/null; do
	python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$IMGVM_HOME/second/vm.json" 2>/dev/null || bad=$((bad + 1))
	reads=$((reads + 1))
done
wait $writer
if [ $bad = 0 ] && [ $reads -gt 5 ] && ! grep -q BAD "$T/writer.out" &&
	grep -q '"memory": "712M"' "$IMGVM_HOME/second/vm.json" &&
	[ "$(ls -A "$IMGVM_HOME/second" | grep -v -e '^vm.json$' -e '^lock$')" = "" ]; then
	ok "200 rewrites under $reads concurrent reads: always a whole definition, no temporary file left"
else
	fail "atomic rewrite: $bad bad reads of $reads; $(cat "$T/writer.out")"
fi
strace -f -e trace=openat,write,fsync,rename,close -o "$T/strace" "$IMGVM" modify second --cpus 3 >/dev/null 2>&1
order=$(python3 - "$T/strace" <<'PY'
import re, sys
fd = None; steps = []
for line in open(sys.argv[1]):
    m = re.search(r'openat\(AT_FDCWD, "([^"]*)", ([^)]*)\) = (\d+)', line)
    if m and '.tmp' in m.group(1):
        fd = m.group(3); steps.append("open-tmp")
    elif m and m.group(1).endswith("/second") and "O_DIRECTORY" in m.group(2):
        dfd = m.group(3); steps.append("open-dir")
    elif fd and re.search(r'fsync\(%s\)' % fd, line):
        steps.append("fsync-tmp"); fd = None
    elif re.search(r'rename\(".*\.tmp", ".*/vm.json"\)', line):
        steps.append("rename")
    elif "fsync(" in line and "open-dir" in steps:
        steps.append("fsync-dir")
print(" ".join(steps))
PY
)
if [ "$order" = "open-tmp fsync-tmp rename open-dir fsync-dir" ]; then
	ok "write order: temporary file, fsync, rename over vm.json, fsync of the folder"
else
	fail "write order: $order"
fi

# ---- a running VM's folder is locked ----
exec {lockfd}>"$IMGVM_HOME/lab/lock"
flock "$lockfd"
refused "start while it runs" "running" start lab
refused "delete while it runs" "running" delete lab
grep -Eq '^lab +running' <<<"$("$IMGVM" list)" && ok "list shows a locked VM as running" ||
	fail "list while locked: $("$IMGVM" list)"
exec {lockfd}>&-

# ---- snapshots of a stopped VM: every writable disk, all or none ----
"$IMGTOOL" create -f vdi "$T/keep-ro.vdi" 16M >/dev/null
"$IMGVM" create snap --disk new:vmdk:32M --disk new:vmdk:16M --disk "$T/keep-ro.vdi,readonly" >/dev/null
S=$IMGVM_HOME/snap
qemu-io -f vmdk -c 'write -P 0xaa 0 1M' "$S/snap.vmdk" >/dev/null
qemu-io -f vmdk -c 'write -P 0xa2 0 1M' "$S/snap-2.vmdk" >/dev/null
if "$IMGVM" snapshot snap create before >/dev/null &&
	[ -e "$S/snap.vmdk.snapshots/before.vmdk" ] && [ -e "$S/snap-2.vmdk.snapshots/before.vmdk" ] &&
	[ ! -e "$T/keep-ro.vdi.snapshots" ]; then
	ok "snapshot create: a layer for each writable disk, none for the read-only one"
else
	fail "snapshot create: $(ls "$S")"
fi
qemu-io -f vmdk -c 'write -P 0xbb 0 1M' "$S/snap.vmdk" >/dev/null
qemu-io -f vmdk -c 'write -P 0xb2 0 1M' "$S/snap-2.vmdk" >/dev/null
"$IMGVM" snapshot snap list >"$T/snaplist"
if [ "$(grep -c '^before ' "$T/snaplist")" = 2 ]; then
	ok "snapshot list: the tag on both disks"
else
	fail "snapshot list: $(cat "$T/snaplist")"
fi
if "$IMGVM" snapshot snap revert before >/dev/null &&
	qemu-io -f vmdk -r -c 'read -P 0xaa 0 1M' "$S/snap.vmdk" | grep -q '^read 1048576' &&
	qemu-io -f vmdk -r -c 'read -P 0xa2 0 1M' "$S/snap-2.vmdk" | grep -q '^read 1048576'; then
	ok "snapshot revert: both disks read what they held at create (checked by qemu-io)"
else
	fail "snapshot revert"
fi
refused "snapshot revert to an unknown tag" "no snapshot 'nope'" snapshot snap revert nope
refused "snapshot create with a tag that exists" "already has" snapshot snap create before
refused "snapshot with a bad tag" "invalid tag" snapshot snap create 'a/b'
# all or none: the second disk cannot take a snapshot (its .snapshots
# is a plain file): refused before any disk changes
: >"$S/snap-2.vmdk.snapshots.tmp"
mv "$S/snap-2.vmdk.snapshots" "$S/snap-2.vmdk.snapshots.away"
mv "$S/snap-2.vmdk.snapshots.tmp" "$S/snap-2.vmdk.snapshots"
"$IMGVM" snapshot snap create half >/dev/null 2>"$T/half.err"
rc=$?
rm "$S/snap-2.vmdk.snapshots"
mv "$S/snap-2.vmdk.snapshots.away" "$S/snap-2.vmdk.snapshots"
if [ $rc = 1 ] && [ ! -e "$S/snap.vmdk.snapshots/half.vmdk" ] && grep -q "nothing changed" "$T/half.err" &&
	[ "$(grep -c . "$T/half.err")" = 1 ]; then
	ok "snapshot create refused on the second disk changes no disk (one line: $(cat "$T/half.err"))"
else
	fail "all or none, refused up front (rc=$rc): $(cat "$T/half.err"); $(ls "$S/snap.vmdk.snapshots")"
fi
# ... and failing midway (a stray file holds the second disk's layer
# name) is undone on the first disk
: >"$S/snap-2.vmdk.snapshots/half.vmdk"
"$IMGVM" snapshot snap create half >/dev/null 2>"$T/half.err"
rc=$?
rm "$S/snap-2.vmdk.snapshots/half.vmdk"
if [ $rc = 1 ] && [ ! -e "$S/snap.vmdk.snapshots/half.vmdk" ] && grep -q undoing "$T/half.err" &&
	! "$IMGTOOL" snapshot list "$S/snap.vmdk" | grep -q '^half ' &&
	qemu-io -f vmdk -r -c 'read -P 0xaa 0 1M' "$S/snap.vmdk" | grep -q '^read 1048576'; then
	ok "snapshot create failing on the second disk is undone on the first (all or none)"
else
	fail "all or none (rc=$rc): $(cat "$T/half.err"); $(ls "$S/snap.vmdk.snapshots")"
fi
exec {lockfd}>"$S/lock"
flock "$lockfd"
refused "snapshot of a running VM" "stopped" snapshot snap create live
exec {lockfd}>&-
"$IMGVM" snapshot snap delete before >/dev/null && [ ! -e "$S/snap.vmdk.snapshots/before.vmdk" ] &&
	qemu-io -f vmdk -r -c 'read -P 0xaa 0 1M' "$S/snap.vmdk" | grep -q '^read 1048576' &&
	ok "snapshot delete: the layer goes, the data stays" || fail "snapshot delete"
"$IMGVM" delete snap --delete-disks
[ ! -e "$S" ] && [ -e "$T/keep-ro.vdi" ] && ok "delete --delete-disks takes the snapshots along, leaves the read-only disk" ||
	fail "delete with snapshots left $(ls -R "$S" | tr '\n' ' ')"

# ---- OVA export / import ----
"$IMGVM" create app --memory 1G --cpus 2 --disk new:vdi:64M --disk new:vmdk:32M --cdrom installer.iso >/dev/null
qemu-io -f vdi -c 'write -P 0xaa 1M 1M' "$IMGVM_HOME/app/app.vdi" >/dev/null
qemu-io -f vmdk -c 'write -P 0x55 0 64k' "$IMGVM_HOME/app/app.vmdk" >/dev/null
mkdir -p "$T/ova"
if "$IMGVM" export app "$T/app.ova" >/dev/null &&
	[ "$(tar tf "$T/app.ova" | tr '\n' ' ')" = "app.ovf app.mf app-disk1.vmdk app-disk2.vmdk " ]; then
	ok "export: a tar with the descriptor first, the manifest second, then the disks"
else
	fail "export: $(tar tf "$T/app.ova" 2>&1 | tr '\n' ' ')"
fi
(cd "$T/ova" && tar xf ../app.ova)
if (cd "$T/ova" && sha256sum -c --strict app.mf >/dev/null) &&
	[ "$(grep -c '^SHA256(' "$T/ova/app.mf")" = 3 ]; then
	ok "the manifest verifies with sha256sum (descriptor and both disks)"
else
	fail "manifest: $(cat "$T/ova/app.mf")"
fi
if qemu-img check -f vmdk "$T/ova/app-disk1.vmdk" >/dev/null 2>&1 &&
	qemu-img info "$T/ova/app-disk1.vmdk" | grep -q 'create type: streamOptimized' &&
	qemu-img compare -f vdi -F vmdk "$IMGVM_HOME/app/app.vdi" "$T/ova/app-disk1.vmdk" >/dev/null; then
	ok "the disks are streamOptimized VMDKs that qemu-img checks clean and finds identical to the VM's"
else
	fail "OVA disks: $(qemu-img info "$T/ova/app-disk1.vmdk" 2>&1 | tr '\n' ' ')"
fi
# the OVF 1.0 envelope schema (DSP8023) is not on this machine and there is
# no network to fetch it: well-formedness and the structure VirtualBox
# reads are checked instead
if xmllint --noout "$T/ova/app.ovf" &&
	[ "$(xmllint --xpath 'count(//*[local-name()="Item"]/*[local-name()="ResourceType"])' "$T/ova/app.ovf")" = 6 ] &&
	xmllint --xpath 'string(//*[local-name()="Item"][*[local-name()="ResourceType"]="4"]/*[local-name()="VirtualQuantity"])' "$T/ova/app.ovf" | grep -qx 1024 &&
	xmllint --xpath 'string(//*[local-name()="Disk"][1]/@*[local-name()="capacity"])' "$T/ova/app.ovf" | grep -qx 67108864; then
	ok "the OVF descriptor: well-formed XML (xmllint), CPU, memory 1024 MB, SATA controller, two disks, CD-ROM"
else
	fail "descriptor: $(head -c 400 "$T/ova/app.ovf")"
fi
if "$IMGVM" import "$T/app.ova" app2 >/dev/null &&
	"$IMGTOOL" compare "$IMGVM_HOME/app/app.vdi" "$IMGVM_HOME/app2/app2.vdi" >/dev/null &&
	"$IMGTOOL" compare "$IMGVM_HOME/app/app.vmdk" "$IMGVM_HOME/app2/app2-2.vdi" >/dev/null &&
	python3 -c '
import json, sys
o = json.load(open(sys.argv[1]))["options"]
assert o["memory"] == "1024M" and o["cpus"] == "2" and len(o["disk"]) == 2, o
' "$IMGVM_HOME/app2/vm.json"; then
	ok "import of our export: memory, CPUs, and disk contents identical (imgtool compare)"
else
	fail "re-import: $(cat "$IMGVM_HOME/app2/vm.json" 2>&1)"
fi
if "$IMGVM" import "$T/app.ova" app3 --format vmdk >/dev/null &&
	qemu-img check -f vmdk "$IMGVM_HOME/app3/app3.vmdk" >/dev/null 2>&1 &&
	"$IMGTOOL" compare "$IMGVM_HOME/app/app.vdi" "$IMGVM_HOME/app3/app3.vmdk" >/dev/null; then
	ok "import --format vmdk: the disks converted to VMDK, contents identical"
else
	fail "import --format vmdk: $(ls "$IMGVM_HOME/app3" 2>&1)"
fi
refused "import under a name that exists" "exists" import "$T/app.ova" app2
# hostile appliances: a damaged disk, a path in the tar, no descriptor first
cp "$T/ova/app-disk2.vmdk" "$T/ova/keep.vmdk"
printf 'X' | dd of="$T/ova/app-disk2.vmdk" bs=1 seek=70000 conv=notrunc 2>/dev/null
(cd "$T/ova" && tar cf ../damaged.ova app.ovf app.mf app-disk1.vmdk app-disk2.vmdk)
refused "import of an appliance whose disk does not match the manifest" "does not match" import "$T/damaged.ova" dmg
[ ! -e "$IMGVM_HOME/dmg" ] && ok "a refused import leaves no VM behind" || fail "refused import left $IMGVM_HOME/dmg"
mv "$T/ova/keep.vmdk" "$T/ova/app-disk2.vmdk"
mkdir -p "$T/ova/sub"
cp "$T/ova/app.mf" "$T/ova/sub/evil.mf"
(cd "$T/ova" && tar cf ../evil.ova app.ovf sub/evil.mf)
refused "import of a tar with a path in it" "plain name" import "$T/evil.ova" evil
(cd "$T/ova" && tar cf ../noovf.ova app.mf app.ovf)
refused "import of a tar that does not start with the descriptor" "first file" import "$T/noovf.ova" x
printf '<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><Envelope><References><File href="&x;" id="f"/></References></Envelope>' >"$T/ova/ent.ovf"
(cd "$T/ova" && tar cf ../ent.ova ent.ovf)
out=$("$IMGVM" import "$T/ent.ova" ent 2>&1)
if [ $? = 1 ] && ! grep -q root <<<"$out"; then
	ok "a descriptor with an external entity is refused, the file not read ($out)"
else
	fail "external entity: $out"
fi
"$IMGVM" delete app --delete-disks
"$IMGVM" delete app2 --delete-disks
"$IMGVM" delete app3 --delete-disks

# ---- delete ----
"$IMGVM" delete second
[ ! -e "$IMGVM_HOME/second" ] && ok "delete removes the VM's folder" || fail "delete left $(ls "$IMGVM_HOME/second")"
cp "$IMGVM_HOME/lab/lab.vdi" "$T/keep.vdi"
"$IMGVM" modify lab --disk "$IMGVM_HOME/lab/lab.vdi" --disk "$IMGVM_HOME/lab/lab.vmdk" --disk "$T/keep.vdi,readonly"
"$IMGVM" delete lab --delete-disks
if [ ! -e "$IMGVM_HOME/lab" ] && [ -e "$T/keep.vdi" ]; then
	ok "delete --delete-disks removes the writable disks, keeps a read-only one"
else
	fail "delete --delete-disks: $(ls -R "$IMGVM_HOME" 2>&1 | tr '\n' ' ')"
fi
"$IMGVM" create keeper --disk "$T/keep.vdi" >/dev/null
"$IMGVM" delete keeper
[ -e "$T/keep.vdi" ] && ok "delete without --delete-disks keeps the disks" || fail "delete removed a disk"
[ -z "$("$IMGVM" list)" ] && ok "list is empty at the end" || fail "list: $("$IMGVM" list)"

finish
