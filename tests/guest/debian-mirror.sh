#!/bin/bash
# debian-mirror.sh [--print-dir]: a local Debian 12 (bookworm, amd64)
# package mirror from which Debian's netboot installer installs a minimal
# system with no other network.  It holds
#   - the packages a minimal install unpacks: priorities required,
#     important and standard (standard only so a preseed may pick it),
#     linux-image-amd64, grub-pc and what debian-installer adds on its own
#     (locales, console setup, tasksel, os-prober, ...), with all their
#     dependencies resolved by apt;
#   - the installer's own udebs from main/debian-installer, except the
#     kernel module udebs of kernels other than the one the netboot
#     installer runs (its ABI must match: the installer loads them).
# apt runs with a private root (sources.list, lists, cache, an empty dpkg
# status), so the host's apt state is untouched; the archive's InRelease is
# checked against debian-archive-keyring and every file against the
# SHA256 of the signed index.  The Packages files are the archive's own
# stanzas of what was downloaded (Priority, Section and hashes as Debian
# publishes them), the files at the archive's own pool paths; the Release
# is made by apt-ftparchive and left unsigned (the preseed allows
# unauthenticated packages).
#
# The mirror is cached in $IMGVM_CACHE/debian-mirror/<key> (default
# ~/.cache/imgvm), the key a hash of the package names and the installer's
# kernel version, and reused when present.  Prints the mirror's directory
# on stdout (its debian/ is the mirror root, http://HOST/debian).
#
# Environment: DI_INITRD (the netboot initrd whose kernel version the
# module udebs must match; default the debian-installer-12-netboot-amd64
# package's), DEBIAN_ARCHIVE (default http://deb.debian.org/debian).
set -euo pipefail

DI_INITRD=${DI_INITRD:-/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/initrd.gz}
ARCHIVE=${DEBIAN_ARCHIVE:-http://deb.debian.org/debian}
CACHE=${IMGVM_CACHE:-$HOME/.cache/imgvm}
SUITE=bookworm

# debian-installer installs these beyond debootstrap's required and
# important: the kernel and boot loader, then localechooser, console-setup,
# tasksel/pkgsel, grub-installer (os-prober), hw-detect and finish-install.
EXTRAS=(
	linux-image-amd64 grub-pc grub-pc-bin grub-common grub2-common os-prober
	initramfs-tools busybox zstd locales console-setup keyboard-configuration
	kbd tasksel tasksel-data popularity-contest laptop-detect discover
	eject installation-report openssh-server qemu-guest-agent debootstrap
	usr-is-merged
	apt-transport-https ca-certificates
)

die() {
	echo "debian-mirror: $*" >&2
	exit 1
}

for tool in apt-get apt-ftparchive xz gzip cpio sha256sum; do
	command -v "$tool" >/dev/null || die "$tool is needed (scripts/deps.sh installs apt-utils, xz-utils, cpio)"
done
[ -e "$DI_INITRD" ] || die "$DI_INITRD not found (debian-installer-12-netboot-amd64)"

# The netboot installer's kernel: its initrd carries lib/modules/<kver>.
KVER=$(zcat "$DI_INITRD" | cpio -t --quiet 2>/dev/null | sed -n 's|^lib/modules/\([^/]*\)$|\1|p' | head -1)
[ -n "$KVER" ] || die "no lib/modules/<version> in $DI_INITRD"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/debian-mirror.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
APTROOT=$WORK/apt
mkdir -p "$APTROOT"/etc/apt/{apt.conf.d,preferences.d,sources.list.d} \
	"$APTROOT"/var/lib/apt/lists/partial "$APTROOT"/var/cache/apt/archives/partial \
	"$APTROOT"/var/lib/dpkg
: >"$APTROOT/var/lib/dpkg/status"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $ARCHIVE $SUITE main main/debian-installer" \
	>"$APTROOT/etc/apt/sources.list"
APT=(apt-get -q -o "Dir=$APTROOT" -o "Dir::State::status=$APTROOT/var/lib/dpkg/status"
	-o "Dir::Etc::SourceList=$APTROOT/etc/apt/sources.list"
	-o "Dir::Etc::SourceParts=$APTROOT/etc/apt/sources.list.d"
	-o "Dir::Etc::Parts=$APTROOT/etc/apt/apt.conf.d"
	-o "Dir::Etc::Preferences=$APTROOT/etc/apt/preferences"
	-o "Dir::Etc::PreferencesParts=$APTROOT/etc/apt/preferences.d"
	-o APT::Architecture=amd64 -o Debug::NoLocking=1
	-o APT::Get::List-Cleanup=0 -o Acquire::Languages=none)

"${APT[@]}" update >"$WORK/update.log" 2>&1 || die "apt-get update: $(tail -3 "$WORK/update.log")"
lists=$APTROOT/var/lib/apt/lists
debs_index=$(ls "$lists"/*_dists_${SUITE}_main_binary-amd64_Packages*)
udebs_index=$(ls "$lists"/*_dists_${SUITE}_main_debian-installer_binary-amd64_Packages*)
catidx() { /usr/lib/apt/apt-helper cat-file "$1"; }
catidx "$debs_index" >"$WORK/Packages.deb"
catidx "$udebs_index" >"$WORK/Packages.udeb"

# The packages asked for: every required/important/standard package and
# the extras; the udebs: all but other kernels' module udebs.
awk -v RS= -v FS='\n' '{
	name = ""; prio = ""
	for (i = 1; i <= NF; i++) {
		if ($i ~ /^Package: /) name = substr($i, 10)
		if ($i ~ /^Priority: /) prio = substr($i, 11)
	}
	if (prio == "required" || prio == "important" || prio == "standard") print name
}' "$WORK/Packages.deb" | sort -u >"$WORK/names.deb"
printf '%s\n' "${EXTRAS[@]}" | sort -u >>"$WORK/names.deb"
sort -u -o "$WORK/names.deb" "$WORK/names.deb"
awk -v RS= -v FS='\n' -v kver="$KVER" '{
	for (i = 1; i <= NF; i++) if ($i ~ /^Package: /) name = substr($i, 10)
	if (name ~ /-[0-9]+\.[0-9]+\.[0-9]+-[0-9]+-[a-z0-9]+-di$/ && index(name, "-" kver "-di") == 0) next
	print name
}' "$WORK/Packages.udeb" | sort -u >"$WORK/names.udeb"

KEY=$( (echo "suite $SUITE kver $KVER" && cat "$WORK/names.deb" "$WORK/names.udeb") | sha256sum | cut -c1-16)
OUT=$CACHE/debian-mirror/$KEY
if [ -e "$OUT/complete" ]; then
	echo "$OUT"
	exit 0
fi
echo "debian-mirror: building $OUT (kernel $KVER, $(wc -l <"$WORK/names.deb") packages asked for, $(wc -l <"$WORK/names.udeb") udebs)" >&2
# (files of an unfinished build are kept and checked, not fetched again)
rm -f "$OUT/complete"
mkdir -p "$OUT/debian"

# apt resolves the dependencies (as on an empty system, recommends
# included) and names each file with its SHA256; the udebs come straight
# from their index, which apt's update verified.
"${APT[@]}" -o APT::Install-Recommends=1 --print-uris -y install $(cat "$WORK/names.deb") \
	>"$WORK/resolve.log" 2>&1 || die "apt-get could not resolve the package set: $(grep '^E:' "$WORK/resolve.log" | head -3)"
# (apt names the files by URL, percent-encoded; the index by Filename)
sed -n "s|^'$ARCHIVE/\\([^']*\\)' .*|\\1|p" "$WORK/resolve.log" | sed 's/%2[bB]/+/g; s/%3[aA]/:/g; s/%7[eE]/~/g' >"$WORK/files.deb"
[ -s "$WORK/files.deb" ] || die "apt-get printed no files to fetch: $(tail -3 "$WORK/resolve.log")"
awk -v RS= -v FS='\n' -v archive="$ARCHIVE" 'NR == FNR { want[$0] = 1; next }
{
	file = ""; sum = ""
	for (i = 1; i <= NF; i++) {
		if ($i ~ /^Filename: /) file = substr($i, 11)
		if ($i ~ /^SHA256: /) sum = substr($i, 9)
	}
	if (file in want) print archive "/" file, sum
}' RS='\n' "$WORK/files.deb" RS= "$WORK/Packages.deb" >"$WORK/fetch"
[ "$(wc -l <"$WORK/fetch")" = "$(wc -l <"$WORK/files.deb")" ] || die "$(wc -l <"$WORK/files.deb") files from apt, $(wc -l <"$WORK/fetch") found in the index"
awk -v RS= -v FS='\n' -v archive="$ARCHIVE" 'NR == FNR { want[$0] = 1; next }
{
	name = ""; file = ""; sum = ""
	for (i = 1; i <= NF; i++) {
		if ($i ~ /^Package: /) name = substr($i, 10)
		if ($i ~ /^Filename: /) file = substr($i, 11)
		if ($i ~ /^SHA256: /) sum = substr($i, 9)
	}
	if (name in want) print archive "/" file, sum
}' RS='\n' "$WORK/names.udeb" RS= "$WORK/Packages.udeb" >>"$WORK/fetch"

# apt's own downloader, a few at a time, each file checked against its
# hash.  A package that cannot be had stops the build; a udeb only goes
# on the list in udebs-missing (an archive may serve the packages and not
# every udeb: then the netboot installer cannot run from this mirror, a
# debootstrap install still can).
fetch_one() {
	local url=$1 sum=$2 dest=$OUT/debian/${1#"$ARCHIVE"/}
	mkdir -p "$(dirname "$dest")"
	[ -e "$dest" ] && echo "$sum  $dest" | sha256sum -c --status && return 0
	# a mirror built before for another package list may have it, or know
	# that the archive does not serve it
	for other in "$OUT"/../*/debian/"${1#"$ARCHIVE"/}"; do
		[ -e "$other" ] && echo "$sum  $other" | sha256sum -c --status && ln -f "$other" "$dest" && return 0
	done
	case $url in *.udeb)
		cat "$OUT"/../*/udebs-missing 2>/dev/null | grep -qxF "${url##*/}" && { echo "${url##*/}" && return 1; }
		;;
	esac
	/usr/lib/apt/apt-helper -q download-file "$url" "$dest" "SHA256:$sum" >/dev/null 2>&1 ||
		/usr/lib/apt/apt-helper -q download-file "$url" "$dest" "SHA256:$sum" >/dev/null 2>&1 ||
		{ echo "${url##*/}" && return 1; }
}
export -f fetch_one
export OUT ARCHIVE
grep -v '\.udeb ' "$WORK/fetch" | xargs -P 4 -n 2 bash -c 'fetch_one "$0" "$1"' >"$WORK/missing" ||
	die "could not fetch $(wc -l <"$WORK/missing") packages: $(head -5 "$WORK/missing" | tr '\n' ' ')"
grep '\.udeb ' "$WORK/fetch" | xargs -P 4 -n 2 bash -c 'fetch_one "$0" "$1"' | sort >"$OUT/udebs-missing" || true

# Packages: the archive's stanzas of the files now in the pool
index() { # INDEX OUTDIR
	mkdir -p "$2"
	(cd "$OUT/debian" && find pool -type f) >"$WORK/pool"
	awk -v RS= -v FS='\n' -v ORS='\n\n' 'NR == FNR { have[$0] = 1; next }
	{
		for (i = 1; i <= NF; i++) if ($i ~ /^Filename: /) file = substr($i, 11)
		if (file in have) print
	}' RS='\n' "$WORK/pool" RS= "$1" >"$2/Packages"
	gzip -9nk "$2/Packages"
	xz -k "$2/Packages"
}
index "$WORK/Packages.deb" "$OUT/debian/dists/$SUITE/main/binary-amd64"
index "$WORK/Packages.udeb" "$OUT/debian/dists/$SUITE/main/debian-installer/binary-amd64"
ndeb=$(grep -c '^Package: ' "$OUT/debian/dists/$SUITE/main/binary-amd64/Packages")
nudeb=$(grep -c '^Package: ' "$OUT/debian/dists/$SUITE/main/debian-installer/binary-amd64/Packages")
[ "$ndeb" -gt 100 ] || die "only $ndeb packages indexed"
(cd "$OUT/debian/dists/$SUITE" && apt-ftparchive \
	-o APT::FTPArchive::Release::Origin=Debian -o APT::FTPArchive::Release::Label=Debian \
	-o APT::FTPArchive::Release::Suite=stable -o APT::FTPArchive::Release::Codename=$SUITE \
	-o APT::FTPArchive::Release::Version=12 -o APT::FTPArchive::Release::Architectures=amd64 \
	-o APT::FTPArchive::Release::Components=main \
	-o "APT::FTPArchive::Release::Description=Local Debian 12 mirror for the installer (kernel $KVER)" \
	release . >"$WORK/Release") && mv "$WORK/Release" "$OUT/debian/dists/$SUITE/Release"
ln -sfn "$SUITE" "$OUT/debian/dists/stable"
printf 'kernel %s\npackages %s\nudebs %s\nudebs-missing %s\n' "$KVER" "$ndeb" "$nudeb" "$(wc -l <"$OUT/udebs-missing")" >"$OUT/complete"
echo "debian-mirror: $ndeb packages, $nudeb udebs ($(wc -l <"$OUT/udebs-missing") not served by $ARCHIVE), $(du -sh "$OUT" | cut -f1)" >&2
echo "$OUT"
