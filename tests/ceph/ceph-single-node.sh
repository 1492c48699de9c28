#!/bin/bash
# A throwaway single-node Ceph cluster for the RBD tests: one monitor and
# one OSD (bluestore on a sparse file), both on 127.0.0.1, everything
# (configuration, keyring, data, logs, PID files, admin sockets) in DIR.
#
#   tests/ceph/ceph-single-node.sh start [DIR]   prints CEPH_DIR=, CEPH_CONF=
#                                                (eval it); pool "rbd" ready
#   tests/ceph/ceph-single-node.sh stop DIR      stops what start started,
#                                                by the PIDs in DIR/run
#   tests/ceph/ceph-single-node.sh stop-daemon DIR mon.a|osd.0
#                                                stops one (failure tests)
#
# Debian 12 packages: ceph-mon ceph-osd ceph-common uuid-runtime.  No mgr
# is started: RBD I/O does not need one.  Environment: CEPH_STORE_MB (OSD
# capacity, default 4096), CEPH_START_TIMEOUT (seconds per step, 120),
# CEPH_OBJECTSTORE (bluestore, the default, needs O_DIRECT on DIR's file
# system; memstore keeps the data in the OSD's memory, for tmpfs and 9p).
set -euo pipefail

STORE_MB=${CEPH_STORE_MB:-4096}
OBJECTSTORE=${CEPH_OBJECTSTORE:-bluestore}
TIMEOUT=${CEPH_START_TIMEOUT:-120}

say() { echo "ceph-single-node: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

# A port nothing listens on, under the ephemeral range (so no outgoing
# connection takes it before the monitor binds it).
unused_port() {
	local p
	for _ in $(seq 100); do
		p=$((11000 + RANDOM % 19000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no unused TCP port on 127.0.0.1"
}

# Running and not a zombie (exited daemons wait for PID 1 to reap them).
alive() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[ "${s%% *}" != Z ]
}

ceph_cmd() { timeout 30 ceph -c "$DIR/ceph.conf" --connect-timeout 10 "$@"; }

# until SECONDS WHAT COMMAND...: poll; give up when a daemon has died.
until_ok() {
	local secs=$1 limit=$((SECONDS + $1)) what=$2 f
	shift 2
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $limit ] || die "no $what after ${secs}s (logs in $DIR/log)"
		for f in "$DIR"/run/*.pid; do
			[ -e "$f" ] || continue
			alive "$(cat "$f")" || die "$(basename "$f" .pid) died (logs in $DIR/log)"
		done
		sleep 0.3
	done
}

launch() {
	local name=$1
	shift
	setsid "$@" -f </dev/null >>"$DIR/log/$name.out" 2>&1 &
	echo $! >"$DIR/run/$name.pid"
}

conf() {
	cat <<CONF
[global]
fsid = $1
mon initial members = a
mon host = [v2:127.0.0.1:$2,v1:127.0.0.1:$3]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
log to stderr = false
err to stderr = false
crash dir = $DIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 1
mon warn on insecure global id reclaim allowed = false
paxos propose interval = 0.1

[mon]
mon data = $DIR/mon.\$id

[osd]
osd data = $DIR/osd.\$id
osd objectstore = $OBJECTSTORE
memstore device bytes = $((STORE_MB << 20))
bluestore block create = true
bluestore block size = $((STORE_MB << 20))
bluestore fsck on mkfs = false
bluestore cache autotune = false
bluestore cache size = 67108864
osd memory target = 939524096
osd op num shards = 1
osd op num threads per shard = 2
CONF
}

start() {
	DIR=${1:-$(mktemp -d "${TMPDIR:-/tmp}/ceph.XXXXXX")}
	mkdir -p "$DIR"
	DIR=$(cd "$DIR" && pwd)
	[ ! -e "$DIR/ceph.conf" ] || die "$DIR already has a cluster"
	case $OBJECTSTORE in bluestore | memstore) ;; *) die "CEPH_OBJECTSTORE is bluestore or memstore" ;; esac
	for t in ceph ceph-mon ceph-osd ceph-authtool monmaptool rbd uuidgen setsid; do
		command -v $t >/dev/null || die "$t is not installed"
	done
	mkdir -p "$DIR"/{run,log,crash,mon.a,osd.0}
	trap 'say "start failed: stopping what was started"; stop "$DIR"' EXIT

	local fsid v2 v1 uuid k=$DIR/keyring
	fsid=$(uuidgen)
	v2=$(unused_port)
	v1=$(unused_port)
	while [ "$v1" = "$v2" ]; do v1=$(unused_port); done
	conf "$fsid" "$v2" "$v1" >"$DIR/ceph.conf"
	ceph-authtool --create-keyring "$k" --gen-key -n mon. --cap mon 'allow *' >/dev/null
	ceph-authtool "$k" --gen-key -n client.admin --cap mon 'allow *' \
		--cap osd 'allow *' --cap mgr 'allow *' >/dev/null
	ceph-authtool "$k" --gen-key -n osd.0 --cap mon 'allow profile osd' \
		--cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null

	monmaptool --create --clobber --enable-all-features --fsid "$fsid" \
		--addv a "[v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]" "$DIR/monmap" >/dev/null
	ceph-mon -c "$DIR/ceph.conf" -i a --mkfs --monmap "$DIR/monmap" \
		--keyring "$k" >>"$DIR/log/mkfs.log" 2>&1 || die "ceph-mon --mkfs failed"
	launch mon.a ceph-mon -c "$DIR/ceph.conf" -i a
	until_ok "$TIMEOUT" monitor ceph_cmd mon stat

	uuid=$(uuidgen)
	[ "$(ceph_cmd osd new "$uuid")" = 0 ] || die "ceph osd new did not give id 0"
	ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs --osd-uuid "$uuid" \
		>>"$DIR/log/mkfs.log" 2>&1 || die "ceph-osd --mkfs failed"
	launch osd.0 ceph-osd -c "$DIR/ceph.conf" -i 0
	until_ok "$TIMEOUT" "OSD up" sh -c "ceph -c '$DIR/ceph.conf' --connect-timeout 10 osd dump | grep -q '^osd.0 up'"

	ceph_cmd osd pool create rbd 8 8 >>"$DIR/log/setup.log" 2>&1 || die "pool create failed"
	# writes to the pool, so it returns once the PGs are active
	timeout "$TIMEOUT" rbd -c "$DIR/ceph.conf" pool init rbd || die "rbd pool init failed"
	trap - EXIT
	echo "CEPH_DIR=$DIR"
	echo "CEPH_CONF=$DIR/ceph.conf"
}

# Stop one daemon by its PID file, if the PID is still ours (its command
# line names our ceph.conf): SIGTERM, SIGKILL after 20 s.
stop_daemon() {
	local f=$DIR/run/$1.pid pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/ceph.conf"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 200); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
	fi
	rm -f "$f"
}

stop() {
	DIR=$(cd "${1:?usage: $0 stop DIR}" && pwd)
	[ -d "$DIR/run" ] || die "$DIR holds no cluster"
	stop_daemon osd.0
	stop_daemon mon.a
}

case ${1:-} in
start) start "${2:-}" ;;
stop) stop "${2:-}" ;;
stop-daemon)
	DIR=$(cd "${2:?DIR}" && pwd)
	stop_daemon "${3:?mon.a or osd.0}"
	;;
*)
	echo "usage: $0 start [DIR] | stop DIR | stop-daemon DIR NAME" >&2
	exit 2
	;;
esac
