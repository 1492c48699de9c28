#!/bin/sh
# /init of the Debian installer CD that tests/install/debian.sh builds: the
# project's test guest (Debian's kernel, busybox, mke2fs, sfdisk) with
# Debian's debootstrap and the host's perl added.  It does what
# debian-installer's own steps do for a minimal install, with Debian's
# tools, from the local mirror at http://10.0.2.100/debian (the host
# serves it through a guestfwd; the guest has no other network):
#   netcfg         DHCP on the virtio-net card
#   partman        one MBR partition over the whole first SATA disk, ext4
#   base-installer debootstrap (priorities required and important)
#   apt-setup      sources.list naming the mirror
#   pkgsel         linux-image-amd64, grub-pc (no recommends, no tasks)
#   grub-installer grub-install on the disk, console=ttyS0 in GRUB
#   finish-install fstab, hostname, root password, a marker service
#                  (DEBIAN-BOOT-OK on ttyS0 once multi-user.target is
#                  reached, then a power-off), reboot
# Progress: DEBIAN-INSTALL-PHASE <name> <uptime>; DEBIAN-INSTALL-OK before
# the reboot; DEBIAN-INSTALL-FAIL: <why> and a power-off on an error.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
MIRROR=http://10.0.2.100/debian
SUITE=bookworm
ROOT_PASSWORD=imgvm
HOSTNAME_NEW=debian-imgvm
T=/target

mount -t proc none /proc
mount -t sysfs none /sys
mount -t devtmpfs none /dev 2>/dev/null
mkdir -p /tmp /mnt "$T"
exec </dev/console >/dev/console 2>&1

now() { read -r t _ </proc/uptime; echo "$t"; }
phase() { echo "DEBIAN-INSTALL-PHASE $1 $(now)"; }
die() {
	echo "DEBIAN-INSTALL-FAIL: $*"
	[ -e /tmp/step.log ] && tail -n 30 /tmp/step.log
	[ -e "$T/debootstrap/debootstrap.log" ] && tail -n 30 "$T/debootstrap/debootstrap.log"
	dmesg | tail -n 10
	sync
	poweroff -f
	sleep 3
	echo o >/proc/sysrq-trigger
}
# step NAME COMMAND...: runs COMMAND with its output in /tmp/step.log
# (shown when it fails)
step() {
	name=$1
	shift
	"$@" >/tmp/step.log 2>&1 || die "$name: $* (status $?)"
}
in_target() { chroot "$T" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
	LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true "$@"; }

echo "debian installer (debootstrap) on Linux $(uname -r)"
kver=$(uname -r)
while read -r module; do
	[ -n "$module" ] && insmod "/lib/modules/$kver/$module" 2>/dev/null
done <"/lib/modules/$kver/modules.order.imgvm"

# ---- netcfg ---------------------------------------------------------------
phase netcfg
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do
	usleep 100000
	n=$((n + 1))
done
[ -e /sys/class/net/eth0 ] || die "no network card (eth0)"
cat >/tmp/dhcp-hook <<'EOF'
#!/bin/sh
case $1 in
bound | renew) ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" ;;
esac
EOF
chmod 755 /tmp/dhcp-hook
ifconfig lo 127.0.0.1 up
ifconfig eth0 up
step dhcp udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp-hook
step mirror wget -q -O /tmp/Release "$MIRROR/dists/$SUITE/Release"
grep -q "^Codename: $SUITE" /tmp/Release || die "$MIRROR is no $SUITE mirror"

# ---- partman --------------------------------------------------------------
phase partman
n=0
while [ ! -e /sys/block/sda ] && [ $n -lt 300 ]; do
	usleep 100000
	n=$((n + 1))
done
[ -e /sys/block/sda ] || die "no disk (sda)"
disk=/dev/sda
echo "disk $disk: $(($(cat /sys/block/sda/size) / 2048)) MiB"
echo 'start=2048, type=83, bootable' | step sfdisk /usr/sbin/sfdisk -q --label dos "$disk"
n=0
while [ ! -b "${disk}1" ] && [ $n -lt 100 ]; do
	usleep 100000
	n=$((n + 1))
done
step mkfs /usr/sbin/mke2fs -q -F -t ext4 -L debian "${disk}1"
step mount mount -t ext4 "${disk}1" "$T"

# ---- base-installer -------------------------------------------------------
phase debootstrap
# dash, not busybox's sh, which would run its own chroot and dpkg applets
# instead of the target's dpkg; busybox's dpkg-deb has no --fsys-tarfile:
# ar and tar unpack instead
step debootstrap /usr/bin/dash /usr/sbin/debootstrap --arch=amd64 --no-check-gpg --extractor=ar --include=ca-certificates \
	"$SUITE" "$T" "$MIRROR"
mkdir -p /dev/pts
mount --bind /dev "$T/dev" || die "mount $T/dev"
mount -t devpts devpts "$T/dev/pts" || die "mount $T/dev/pts"
mount -t proc proc "$T/proc" || die "mount $T/proc"
mount -t sysfs sysfs "$T/sys" || die "mount $T/sys"

# ---- apt-setup ------------------------------------------------------------
phase apt-setup
# the mirror's Release is not signed (it is made on the test host)
echo "deb [trusted=yes] $MIRROR $SUITE main" >"$T/etc/apt/sources.list"
echo 'APT::Install-Recommends "false";' >"$T/etc/apt/apt.conf.d/00InstallRecommends"
step apt-update in_target apt-get -q update

# ---- pkgsel and grub-installer --------------------------------------------
phase kernel
cat >"$T/etc/default/grub" <<'EOF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
EOF
# The kernel's postinst builds its initramfs, then initramfs-tools'
# trigger would build it once more (minutes under emulation): not that one.
step initramfs-tools in_target apt-get -q -y install initramfs-tools
conf=$T/etc/initramfs-tools/update-initramfs.conf
sed -i 's/^update_initramfs=.*/update_initramfs=no/' "$conf" || die "$conf"
step kernel in_target apt-get -q -y install linux-image-amd64
sed -i 's/^update_initramfs=.*/update_initramfs=yes/' "$conf" || die "$conf"
[ -s "$T/boot/initrd.img-$(ls "$T/lib/modules" | head -n 1)" ] || die "no initramfs in $T/boot"
phase grub
echo "grub-pc grub-pc/install_devices multiselect $disk" | step debconf in_target debconf-set-selections
step grub-pc in_target apt-get -q -y install grub-pc
step grub-install in_target grub-install "$disk"
step update-grub in_target update-grub

# ---- finish-install -------------------------------------------------------
phase finish
uuid=$(blkid -s UUID -o value "${disk}1" 2>/dev/null)
[ -n "$uuid" ] || uuid=$(in_target blkid -s UUID -o value "${disk}1")
[ -n "$uuid" ] || die "no UUID on ${disk}1"
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$T/etc/fstab"
echo "$HOSTNAME_NEW" >"$T/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$HOSTNAME_NEW" >"$T/etc/hosts"
echo "root:$ROOT_PASSWORD" | step chpasswd in_target chpasswd
# the card's name differs between this installer (eth0) and systemd's
# naming in the installed system: match both
mkdir -p "$T/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$T/etc/systemd/network/50-dhcp.network"
step networkd in_target systemctl enable systemd-networkd
# The marker the host waits for, then a power-off, so that the VMM ends
# and the host may check the image at once.
cat >"$T/etc/systemd/system/debian-boot-ok.service" <<'EOF'
[Unit]
Description=Tell the test host on ttyS0 that Debian booted
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "DEBIAN-BOOT-OK $(uname -r) $(systemctl is-system-running)" >/dev/ttyS0'
ExecStartPost=/bin/systemctl poweroff --no-block

[Install]
WantedBy=multi-user.target
EOF
step marker in_target systemctl enable debian-boot-ok.service
in_target apt-get -q clean
for fs in sys proc dev/pts dev; do
	umount "$T/$fs" 2>/dev/null || umount -l "$T/$fs"
done
sync
umount "$T" || die "umount $T"
echo "DEBIAN-INSTALL-OK $(now)"
sync
reboot -f
