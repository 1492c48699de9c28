#!/bin/sh
# /init of the imgvm test guest (busybox initramfs).  What it does depends on
# imgvm=MODE on the kernel command line:
#   install  partition the first SATA disk, ext4, copy kernel + initramfs from
#            the CD-ROM, extlinux + MBR, write the marker, read it back
#            -> INSTALL-OK, power off (reboot with imgvm.after=reboot;
#            with imgvm.after=wait stay up: MEDIA-EJECTED when the CD-ROM's
#            disc goes, a clean power-off on the ACPI power button)
#   disk     booted from the disk: check the marker -> MARKER-OK, then write
#            a file the host can check -> WRITE-OK, power off
#   bench    sequential I/O on the raw first disk -> BENCH lines, BENCH-DONE
#   fio      (fiobench.iso, which carries fio) 4 KiB random reads and writes
#            at queue depths 1 and 32 on the raw first disk, after one
#            sequential pass that writes all of it -> BENCH lines,
#            BENCH-DONE; imgvm.runtime=SECONDS per run (default 20)
#   copy     hundreds of MiB through the page cache onto the raw first disk,
#            read back -> COPY-OK (tests/vmm-stops.sh)
#   diag     the platform as Linux sees it -> DIAG-DONE
#   net      virtio-net: a DHCP lease (NET-DHCP-OK), a file fetched from
#            http://10.0.2.100/payload (NET-HTTP-SHA256 for the host to
#            compare), then one connection to a TCP echo service on port 7
#            (NET-ECHO-READY, NET-ECHO-DONE), power off; with imgvm.pxe=1
#            (a kernel iPXE loaded) it first says PXE-BOOT-OK
#   pxe      booted over the network by iPXE: PXE-BOOT-OK, power off
#   netbench TCP throughput: a DHCP lease, http://10.0.2.100/big fetched
#            and timed (NETBENCH host-to-guest), then 64 MiB served once on
#            port 9 for the host to time (NETBENCH-READY, NETBENCH-DONE)
#   tablet   the USB tablet: /proc/bus/input/devices, then TABLET-READY and
#            a TABLET-ABS line for each absolute position it reports
#            (TABLET-NONE when no absolute pointer appears); a line typed
#            on the VGA console's keyboard (tty1) comes back as
#            TTY1-LINE[text]; stays up until the host stops it
#   shell    a shell on the console
# Failures print INSTALL-FAIL / MARKER-BAD / BENCH-FAIL / FAIL with a reason.
# Filled in at build time: @MARKER_SHA256@ @MARKER_BYTES@ @KVER@ @WRITE_SHA256@
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
MARKER_SHA256=@MARKER_SHA256@
MARKER_BYTES=@MARKER_BYTES@
WRITE_SHA256=@WRITE_SHA256@
KVER=@KVER@

mount -t proc none /proc
mount -t sysfs none /sys
mount -t devtmpfs none /dev 2>/dev/null
mkdir -p /tmp /mnt /cdrom
exec </dev/console >/dev/console 2>&1

now() { read -r t _ </proc/uptime; echo "$t"; }
say() { echo "guest[$(now)]: $*"; }
power_off() {
	sync
	say "power off"
	poweroff -f
	sleep 3
	echo o >/proc/sysrq-trigger
}
die() {
	echo "$FAIL_TAG: $*"
	dmesg | tail -n 25
	power_off
}

MODE=install
AFTER_INSTALL=poweroff
for word in $(cat /proc/cmdline); do
	case $word in
	imgvm=*) MODE=${word#imgvm=} ;;
	imgvm.after=*) AFTER_INSTALL=${word#imgvm.after=} ;;
	esac
done
case $MODE in
install) FAIL_TAG=INSTALL-FAIL ;;
disk) FAIL_TAG=MARKER-BAD ;;
bench | fio) FAIL_TAG=BENCH-FAIL ;;
copy) FAIL_TAG=COPY-FAIL ;;
net | netbench) FAIL_TAG=NET-FAIL ;;
*) FAIL_TAG=FAIL ;;
esac
[ "$MODE" = disk ] && echo "BOOTED-FROM-DISK"
say "mode $MODE, Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs online"

# kernel modules, dependencies first (the order was computed at build time)
while read -r module; do
	[ -n "$module" ] && insmod "/lib/modules/$KVER/$module" 2>/dev/null
done <"/lib/modules/$KVER/modules.order.imgvm"

# first block device whose name starts with $1 (sd, sr)
find_dev() {
	for d in /sys/block/"$1"*; do
		[ -e "$d" ] && { echo "${d##*/}"; return 0; }
	done
	return 1
}
# wait up to $2 seconds for such a device
await_dev() {
	n=0
	while [ $n -lt $(($2 * 10)) ]; do
		find_dev "$1" >/dev/null && return 0
		usleep 100000
		n=$((n + 1))
	done
	return 1
}
# The AHCI port of disk $1 (sda...).  Names come from asynchronous SCSI
# scanning and change from boot to boot; the port does not.  imgvm's serial
# numbers carry it (IMGVM<port>-<hash>, in the SCSI VPD page 0x80); on
# another VMM the ataN in the sysfs path (with one AHCI controller and no
# other ATA host, ataN is port N-1).
disk_port() {
	p=$(tr -c 'A-Za-z0-9-' ' ' <"/sys/block/$1/device/vpd_pg80" 2>/dev/null |
		grep -o 'IMGVM[0-9]*-' | head -n 1 | tr -dc 0-9)
	[ -n "$p" ] && { echo "$p"; return 0; }
	p=$(readlink -f "/sys/block/$1" | grep -o '/ata[0-9]*/' | head -n 1 | tr -dc 0-9)
	[ -n "$p" ] && { echo $((p - 1)); return 0; }
	return 1
}
# the disk on AHCI port $1, waiting up to $2 seconds for it
disk_on_port() {
	n=0
	while [ $n -lt $(($2 * 10)) ]; do
		for d in /sys/block/sd*; do
			[ -e "$d" ] && [ "$(disk_port "${d##*/}")" = "$1" ] &&
				{ echo "${d##*/}"; return 0; }
		done
		usleep 100000
		n=$((n + 1))
	done
	return 1
}
# wait up to $1 seconds until every ATA disk libata found has its sd node
await_all_disks() {
	want=$(dmesg | grep -oE 'ata[0-9]+\.00: ATA-[0-9]+' | sort -u | wc -l)
	n=0
	while [ $n -lt $(($1 * 10)) ]; do
		have=$(ls -d /sys/block/sd* 2>/dev/null | wc -l)
		[ "$have" -ge "$want" ] && return 0
		usleep 100000
		n=$((n + 1))
	done
	return 1
}
await_node() {
	n=0
	while [ ! -b "$1" ] && [ $n -lt 100 ]; do
		usleep 100000
		n=$((n + 1))
	done
	[ -b "$1" ]
}
ata_log() {
	dmesg | grep -E 'ahci|ata[0-9]|scsi|sd |sr |sd[a-z]|sr[0-9]' | head -n 40 | sed 's/^/  | /'
}
mount_any() { # device dir [options]: ext4, then vfat
	mount -t ext4 ${3:+-o $3} "$1" "$2" 2>/dev/null ||
		mount -t vfat ${3:+-o $3} "$1" "$2"
}

# The guest of the control socket's test: it waits for the host.  The
# CD-ROM is opened every half second (an open checks for a media change);
# once it has no disc, MEDIA-EJECTED.  The ACPI power button (button.ko's
# "Power Button" input devices, read through evdev) makes it sync and
# power off, as systemd-logind or acpid would.
wait_for_host() {
	echo 500 >/sys/block/$1/events_poll_msecs 2>/dev/null
	(
		while dd if=/dev/$1 of=/dev/null bs=2048 count=1 2>/dev/null; do
			usleep 500000
		done
		say "MEDIA-EJECTED: /dev/$1 has no disc"
	) &
	buttons=
	for ev in /sys/class/input/event*; do
		[ "$(cat $ev/device/name 2>/dev/null)" = "Power Button" ] &&
			buttons="$buttons ${ev##*/}"
	done
	[ -n "$buttons" ] || die "no ACPI power button input device"
	say "waiting for the host: power button on$buttons"
	for ev in $buttons; do
		# struct input_event: 16 bytes of time, u16 type, u16 code,
		# s32 value; EV_KEY (1) KEY_POWER (116) pressed (1)
		(
			[ -c /dev/input/$ev ] || die "no /dev/input/$ev"
			while :; do
				e=$(dd if=/dev/input/$ev bs=24 count=1 2>/dev/null |
					od -An -tu2 -j16 -N6 2>/dev/null | tr -s ' ')
				[ "$e" = " 1 116 1" ] && break
				[ -n "$e" ] || sleep 1
			done
			say "POWER-BUTTON pressed: clean shutdown"
			power_off
		) &
	done
	while :; do
		sleep 1
	done
}

mode_install() {
	disk=$(disk_on_port 0 15) || { ata_log; die "no SATA disk on AHCI port 0"; }
	await_dev sr 15 || { ata_log; die "no CD-ROM"; }
	cd=$(find_dev sr)
	sectors=$(cat /sys/block/$disk/size)
	say "target /dev/$disk, $((sectors / 2048)) MiB; installing from /dev/$cd"
	[ "$sectors" -ge 262144 ] || die "disk smaller than 128 MiB"
	mount -t iso9660 -o ro /dev/$cd /cdrom || die "mount /dev/$cd"
	dd if=/dev/zero of=/dev/$disk bs=1M count=1 conv=fsync 2>/dev/null
	echo 'start=2048, type=83, bootable' | /usr/sbin/sfdisk -q --label dos /dev/$disk ||
		die "sfdisk"
	part=/dev/${disk}1
	await_node $part || die "$part missing after partitioning"
	/usr/sbin/mke2fs -q -F -t ext4 -L imgvm-root -E nodiscard $part || die "mke2fs"
	mount -t ext4 $part /mnt || die "mount $part"
	mkdir -p /mnt/boot/extlinux
	cp /cdrom/boot/vmlinuz /cdrom/boot/initrd.gz /mnt/boot/ || die "copy kernel"
	cat >/mnt/boot/extlinux/extlinux.conf <<-EOF
		DEFAULT disk
		PROMPT 0
		TIMEOUT 1
		SAY imgvm test disk
		LABEL disk
		  KERNEL /boot/vmlinuz
		  APPEND initrd=/boot/initrd.gz console=ttyS0,115200 quiet panic=1 imgvm=disk
	EOF
	/usr/bin/extlinux --install /mnt/boot/extlinux >/tmp/extlinux.log 2>&1
	[ -e /mnt/boot/extlinux/ldlinux.sys ] || { cat /tmp/extlinux.log; die "extlinux"; }
	dd if=/usr/lib/syslinux/mbr.bin of=/dev/$disk bs=440 count=1 conv=notrunc,fsync 2>/dev/null ||
		die "MBR"
	zcat /cdrom/marker.gz >/mnt/marker.bin || die "marker"
	echo "$MARKER_SHA256  marker.bin" >/mnt/marker.sha256
	umount /mnt || die "umount"
	umount /cdrom
	# check what reached the disk, not the page cache
	echo 3 >/proc/sys/vm/drop_caches
	mount -t ext4 -o ro $part /mnt || die "remount"
	sum=$(sha256sum /mnt/marker.bin | cut -d' ' -f1)
	size=$(wc -c </mnt/marker.bin)
	umount /mnt
	[ "$sum" = "$MARKER_SHA256" ] && [ "$size" = "$MARKER_BYTES" ] ||
		die "marker read back as $sum ($size bytes)"
	say "marker verified: $size bytes, sha256 $sum"
	echo "INSTALL-OK"
	[ "$AFTER_INSTALL" = wait ] && wait_for_host "$cd"
	if [ "$AFTER_INSTALL" = reboot ]; then
		# the one-run lab: the VMM ejects the CD at this reboot and the
		# firmware boots the installed disk
		sync
		say "rebooting"
		reboot -f
		sleep 3
		echo b >/proc/sysrq-trigger
	fi
	power_off
}

# the file a disk boot writes: 64 KiB of one repeated line
write_pattern() {
	i=0
	while [ $i -lt 2048 ]; do
		echo "imgvm guest write, 32 bytes/ln"
		i=$((i + 1))
	done
}

mode_disk() {
	disk=$(disk_on_port 0 15) || { ata_log; die "no SATA disk on AHCI port 0"; }
	say "boot disk /dev/$disk (AHCI port 0)"
	await_node /dev/${disk}1 || die "/dev/${disk}1 missing"
	mount_any /dev/${disk}1 /mnt ro || die "mount /dev/${disk}1"
	sum=$(sha256sum /mnt/marker.bin 2>/dev/null | cut -d' ' -f1)
	recorded=$(cut -d' ' -f1 /mnt/marker.sha256 2>/dev/null)
	umount /mnt
	say "marker sha256 $sum, recorded $recorded"
	if [ "$sum" != "$MARKER_SHA256" ] || [ "$recorded" != "$MARKER_SHA256" ]; then
		echo "MARKER-BAD"
		power_off
	fi
	echo "MARKER-OK"
	# a guest write that the host checks in the image afterwards
	if mount_any /dev/${disk}1 /mnt rw; then
		write_pattern >/mnt/guestw.txt
		sync
		umount /mnt
		echo 3 >/proc/sys/vm/drop_caches
		mount_any /dev/${disk}1 /mnt ro
		sum=$(sha256sum /mnt/guestw.txt | cut -d' ' -f1)
		umount /mnt
		[ "$sum" = "$WRITE_SHA256" ] && echo "WRITE-OK" ||
			echo "WRITE-BAD $sum"
	else
		echo "WRITE-BAD mount"
	fi
	# more disks (imgvm --disk A --disk B): each one's AHCI port, name and
	# size on the console, and the same pattern at its start for the host
	# to find
	await_all_disks 15 || say "not every ATA disk has a block device: $(ls /sys/block | tr '\n' ' ')"
	write_pattern >/tmp/pattern
	for d in /sys/block/sd*; do
		[ "${d##*/}" = "$disk" ] && continue
		port=$(disk_port "${d##*/}") || port=unknown
		dd if=/tmp/pattern of=/dev/${d##*/} bs=65536 count=1 conv=fsync 2>/dev/null &&
			echo "DISK-WRITE-OK port $port ${d##*/} $(cat $d/size)" ||
			echo "DISK-WRITE-BAD port $port ${d##*/}"
	done
	power_off
}

mb_per_s() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { t = b - a; if (t <= 0) t = 0.01; printf "%.1f MB/s (%.2f s)", n / 1048576 / t, t }'; }
ops_per_s() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { t = b - a; if (t <= 0) t = 0.01; printf "%.0f IOPS (%.2f s)", n / t, t }'; }

mode_bench() {
	disk=$(disk_on_port 0 15) || { ata_log; die "no SATA disk on AHCI port 0"; }
	sectors=$(cat /sys/block/$disk/size)
	mb=256
	for word in $(cat /proc/cmdline); do
		case $word in imgvm.mb=*) mb=${word#imgvm.mb=} ;; esac
	done
	[ $((sectors / 2048)) -ge "$mb" ] || die "/dev/$disk is smaller than $mb MiB"
	say "benchmark on /dev/$disk: $mb MiB sequential, O_DIRECT"
	dd if=/dev/urandom of=/tmp/chunk bs=1M count=16 2>/dev/null
	t0=$(now)
	i=0
	while [ $i -lt $((mb / 16)) ]; do
		dd if=/tmp/chunk of=/dev/$disk bs=1M seek=$((i * 16)) oflag=direct conv=notrunc 2>/dev/null ||
			die "write"
		i=$((i + 1))
	done
	sync
	t1=$(now)
	echo "BENCH seq-write bs=1M: $(mb_per_s $t0 $t1 $((mb * 1048576)))"
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(now)
	dd if=/dev/$disk of=/dev/null bs=1M count=$mb iflag=direct 2>/dev/null || die "read"
	t1=$(now)
	echo "BENCH seq-read bs=1M: $(mb_per_s $t0 $t1 $((mb * 1048576)))"
	t0=$(now)
	dd if=/dev/$disk of=/dev/null bs=4k count=16384 iflag=direct 2>/dev/null || die "read 4k"
	t1=$(now)
	echo "BENCH seq-read bs=4k: $(ops_per_s $t0 $t1 16384) $(mb_per_s $t0 $t1 67108864)"
	t0=$(now)
	dd if=/tmp/chunk of=/dev/$disk bs=4k count=4096 oflag=direct conv=notrunc 2>/dev/null || die "write 4k"
	t1=$(now)
	echo "BENCH seq-write bs=4k: $(ops_per_s $t0 $t1 4096) $(mb_per_s $t0 $t1 16777216)"
	a=$(sha256sum </tmp/chunk | cut -d' ' -f1)
	b=$(dd if=/dev/$disk bs=1M skip=16 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
	if [ "$a" = "$b" ]; then echo "BENCH verify: OK"; else echo "BENCH verify: MISMATCH"; fi
	echo "BENCH-DONE"
	power_off
}

# One fio run on /dev/$disk with 4 KiB O_DIRECT requests through libaio:
# fio_run NAME RW IODEPTH [fio options] -> its terse (v3) line in /tmp/fio.out
fio_run() {
	name=$1 rw=$2 qd=$3
	shift 3
	/usr/bin/fio --name="$name" --filename="/dev/$disk" --ioengine=libaio --direct=1 \
		--bs=4k --rw="$rw" --iodepth="$qd" --output-format=terse --terse-version=3 "$@" \
		>/tmp/fio.all 2>/tmp/fio.err || { cat /tmp/fio.all /tmp/fio.err; die "fio $name"; }
	grep '^3;' /tmp/fio.all >/tmp/fio.out || { cat /tmp/fio.all /tmp/fio.err; die "fio $name: no terse line"; }
	# field 5: the job's error number
	[ "$(cut -d';' -f5 /tmp/fio.out)" = 0 ] || { cat /tmp/fio.all /tmp/fio.err; die "fio $name: error"; }
}

# fio: the same random 4 KiB load as fio users measure NCQ with.  A dynamic
# image allocates blocks on first write; one sequential pass writes the
# whole disk first, so every random read and write below hits an allocated
# block.  Terse v3 fields: 8 read IOPS, 49 write IOPS, 16 and 57 the mean
# completion latency (microseconds).
mode_fio() {
	disk=$(disk_on_port 0 15) || { ata_log; die "no SATA disk on AHCI port 0"; }
	[ -x /usr/bin/fio ] || die "no /usr/bin/fio: boot fiobench.iso"
	runtime=20
	for word in $(cat /proc/cmdline); do
		case $word in imgvm.runtime=*) runtime=${word#imgvm.runtime=} ;; esac
	done
	qdepth=$(cat /sys/block/$disk/device/queue_depth 2>/dev/null)
	say "fio on /dev/$disk ($(($(cat /sys/block/$disk/size) / 2048)) MiB), $runtime s per run, $(/usr/bin/fio --version), $(grep MemAvailable /proc/meminfo | tr -s ' ')"
	# NCQ: libata sets the SCSI queue depth to the device's (32 with
	# NCQ), 1 without
	echo "BENCH fio queue_depth: ${qdepth:-unknown}"
	[ "${qdepth:-0}" -gt 1 ] || say "no NCQ on /dev/$disk: queue depth ${qdepth:-unknown}"
	t0=$(now)
	fio_run fill write 8 --bs=1M
	t1=$(now)
	echo "BENCH fio fill seq-write bs=1M: $(awk -F';' '{ printf "%.1f MB/s, %d MiB", $48 / 1024, $47 / 1024 }' /tmp/fio.out) ($(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s)"
	for rw in randread randwrite; do
		for qd in 1 32; do
			fio_run "$rw-qd$qd" $rw $qd --time_based --runtime="$runtime" --ramp_time=1
			if [ $rw = randread ]; then f=8 l=16; else f=49 l=57; fi
			echo "BENCH fio $rw qd$qd: $(awk -F';' -v f=$f -v l=$l '{ printf "%d IOPS (clat %.0f us)", $f, $l }' /tmp/fio.out)"
		done
	done
	# 32 MiB of random 4 KiB writes, each with a crc32c header, at depth
	# 32, then all read back and checked
	fio_run verify randwrite 32 --size=32M --verify=crc32c --do_verify=1 --verify_fatal=1
	echo "BENCH fio verify crc32c: OK"
	echo "BENCH-DONE"
	power_off
}

# copy: imgvm.mb MiB (default 320) of random data written through the page
# cache onto the raw first disk, so writeback keeps many NCQ commands in
# flight, then read back past the cache and compared -> COPY-OK
mode_copy() {
	disk=$(disk_on_port 0 15) || { ata_log; die "no SATA disk on AHCI port 0"; }
	sectors=$(cat /sys/block/$disk/size)
	mb=320
	for word in $(cat /proc/cmdline); do
		case $word in imgvm.mb=*) mb=${word#imgvm.mb=} ;; esac
	done
	[ $((sectors / 2048)) -ge "$mb" ] || die "/dev/$disk is smaller than $mb MiB"
	say "copy onto /dev/$disk: $mb MiB buffered; queue depth $(cat /sys/block/$disk/device/queue_depth 2>/dev/null)"
	dd if=/dev/urandom of=/tmp/chunk bs=1M count=16 2>/dev/null
	want=$(sha256sum </tmp/chunk | cut -d' ' -f1)
	t0=$(now)
	i=0
	while [ $i -lt $((mb / 16)) ]; do
		dd if=/tmp/chunk of=/dev/$disk bs=1M seek=$((i * 16)) conv=notrunc 2>/dev/null || die "write at $((i * 16)) MiB"
		i=$((i + 1))
		[ $((i % 4)) = 0 ] && say "copied $((i * 16)) MiB"
	done
	sync
	t1=$(now)
	say "written: $(mb_per_s $t0 $t1 $((mb * 1048576)))"
	echo 3 >/proc/sys/vm/drop_caches
	i=0
	while [ $i -lt $((mb / 16)) ]; do
		got=$(dd if=/dev/$disk bs=1M skip=$((i * 16)) count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
		[ "$got" = "$want" ] || die "read back at $((i * 16)) MiB: $got"
		i=$((i + 1))
	done
	echo "COPY-OK $mb MiB"
	power_off
}

mode_diag() {
	echo "== kernel command line: $(cat /proc/cmdline)"
	echo "== CPUs: $(grep -c ^processor /proc/cpuinfo), $(grep -m1 'model name' /proc/cpuinfo)"
	echo "== $(grep MemTotal /proc/meminfo)"
	echo "== PCI functions"
	for f in /sys/bus/pci/devices/*; do
		drv=$(readlink "$f/driver" 2>/dev/null)
		echo "  ${f##*/} $(cat "$f/vendor"):$(cat "$f/device") class $(cat "$f/class") irq $(cat "$f/irq") driver ${drv##*/}"
	done
	echo "== ACPI tables: $(ls /sys/firmware/acpi/tables 2>/dev/null | tr '\n' ' ')"
	echo "== block devices: $(ls /sys/block | tr '\n' ' ')"
	for f in /proc/ioports /proc/iomem /proc/interrupts; do
		echo "== $f"
		sed 's/^/  /' $f
	done
	echo "== kernel log (platform, storage)"
	dmesg | grep -iE 'e820|ACPI:|DMI:|clocksource|tsc:|ioapic|reboot|ahci|ata[0-9]|scsi|sd |sr ' | head -n 120 | sed 's/^/  /'
	echo "DIAG-DONE"
}

# udhcpc's hook: configure the lease it got
dhcp_hook() {
	cat >/tmp/dhcp-hook <<-'EOF'
		#!/bin/sh
		case $1 in
		bound | renew)
			ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
			for r in $router; do route add default gw "$r" dev "$interface"; break; done
			echo "$ip router $router dns $dns" >/tmp/lease
			;;
		esac
	EOF
	chmod 755 /tmp/dhcp-hook
}

net_up() {
	n=0
	while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do
		usleep 100000
		n=$((n + 1))
	done
	[ -e /sys/class/net/eth0 ] || { dmesg | grep -i virtio | tail -5; die "no eth0 (virtio-net)"; }
	drv=$(readlink /sys/class/net/eth0/device/driver)
	say "eth0 $(cat /sys/class/net/eth0/address), driver ${drv##*/}"
	ifconfig lo 127.0.0.1 up
	ifconfig eth0 up
	dhcp_hook
	udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp-hook >/tmp/udhcpc.log 2>&1 ||
		{ cat /tmp/udhcpc.log; die "no DHCP lease"; }
	echo "NET-DHCP-OK $(cat /tmp/lease) mac $(cat /sys/class/net/eth0/address)"
}

# wait_gone PID SECONDS: true when the process ended in time
wait_gone() {
	n=0
	while kill -0 "$1" 2>/dev/null && [ $n -lt $(($2 * 10)) ]; do
		usleep 100000
		n=$((n + 1))
	done
	! kill -0 "$1" 2>/dev/null
}

mode_netbench() {
	net_up
	t0=$(now)
	wget -q -O /dev/null http://10.0.2.100/big || die "fetch of http://10.0.2.100/big"
	t1=$(now)
	echo "NETBENCH host-to-guest $(awk "BEGIN { print $t1 - $t0 }") s"
	nc -l -p 9 -e dd if=/dev/zero bs=65536 count=1024 2>/dev/null &
	pid=$!
	usleep 300000
	echo "NETBENCH-READY"
	wait_gone $pid 300 || die "nobody read the 64 MiB"
	echo "NETBENCH-DONE"
	power_off
}

mode_net() {
	grep -q 'imgvm.pxe=1' /proc/cmdline && echo "PXE-BOOT-OK"
	net_up
	wget -q -O /tmp/payload http://10.0.2.100/payload ||
		die "HTTP fetch of http://10.0.2.100/payload"
	echo "NET-HTTP-SHA256 $(sha256sum /tmp/payload | cut -d' ' -f1) $(wc -c </tmp/payload)"
	nc -l -p 7 -e cat &
	pid=$!
	usleep 300000
	echo "NET-ECHO-READY"
	wait_gone $pid 120 || die "nobody used the echo service"
	echo "NET-ECHO-DONE"
	power_off
}

# The input device with absolute axes (the USB tablet), as eventN.
abs_event_device() {
	for c in /sys/class/input/event*/device/capabilities/abs; do
		[ -e "$c" ] && [ "$(cat "$c")" != 0 ] || continue
		c=${c#/sys/class/input/}
		echo "${c%%/*}"
		return 0
	done
	return 1
}

mode_tablet() {
	echo "IMGVM-TABLET-SCREEN: type a line here" >/dev/tty1
	# the VGA console's keyboard: one line, echoed to the serial console
	(
		read -r line </dev/tty1
		echo "TTY1-LINE[$line]"
	) &
	n=0
	until ev=$(abs_event_device); do
		n=$((n + 1))
		if [ $n -gt 200 ]; then
			echo "TABLET-NONE"
			dmesg | grep -iE 'usb|uhci|hid|input' | tail -n 20 | sed 's/^/  | /'
			while :; do sleep 3600; done
		fi
		usleep 100000
	done
	sed 's/^/  | /' /proc/bus/input/devices
	# struct input_event on x86-64: 16 bytes of time, u16 type, u16
	# code, s32 value; one read of 24 bytes returns one event
	exec 3<"/dev/input/$ev"
	echo "TABLET-READY $ev"
	x=
	y=
	moved=
	while :; do
		# shellcheck disable=SC2046
		set -- $(dd bs=24 count=1 <&3 2>/dev/null | od -An -v -tu2 -w24)
		[ $# -ge 12 ] || continue
		value=$((${11} + ${12} * 65536))
		case $9 in
		0)
			[ -n "$moved" ] && echo "TABLET-ABS x=$x y=$y"
			moved=
			;;
		1) echo "TABLET-KEY code=${10} value=$value" ;;
		3)
			[ "${10}" = 0 ] && x=$value && moved=1
			[ "${10}" = 1 ] && y=$value && moved=1
			;;
		esac
	done
}

case $MODE in
install) mode_install ;;
tablet) mode_tablet ;;
net) mode_net ;;
netbench) mode_netbench ;;
pxe)
	echo "PXE-BOOT-OK $(cat /proc/cmdline)"
	power_off
	;;
disk) mode_disk ;;
bench) mode_bench ;;
fio) mode_fio ;;
copy) mode_copy ;;
diag) mode_diag; power_off ;;
shell)
	ata_log
	echo "guest shell; exit powers off"
	setsid cttyhack sh
	power_off
	;;
*) die "unknown mode $MODE" ;;
esac
