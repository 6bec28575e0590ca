#!/usr/bin/env bash
# tests/agent/libvirt_pair.sh: a second libvirtd on this machine, acting as
# a second "host" for live-migration tests, beside the system one
# (qemu:///system, /run/libvirt/libvirt-sock), which it never touches.
#
#   libvirt_pair.sh start DIR   starts it with its state in DIR (created)
#   libvirt_pair.sh env DIR     prints NIMBUS_PAIR_URI=... (shell syntax)
#   libvirt_pair.sh stop DIR    destroys its domains, stops it and every
#                               process it started, removes DIR
#
# The daemon is the same libvirtd binary, run in a mount namespace of its
# own (unshare -m --propagation private) where /run/libvirt,
# /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are private
# directories of DIR and /etc/libvirt a copy with:
#   libvirtd.conf  its unix socket in DIR/sock (reachable from the root
#                  namespace: qemu+unix:///system?socket=DIR/sock/libvirt-sock),
#                  a host_uuid of its own;
#   qemu.conf      the system's settings plus stdio_handler "file" (no
#                  virtlogd needed: /run/libvirt/virtlogd-sock is not
#                  there), no cgroups (both daemons would name a domain's
#                  cgroup alike), incoming migrations on a
#                  port range apart from the system daemon's.
# It also has a UTS namespace with another host name: libvirt refuses a
# migration whose two ends have the same host name or host UUID.  Both
# daemons share the network namespace, so migration streams and NBD
# (non-shared storage) go over loopback TCP.
#
# The system libvirtd, seen from both namespaces, is
# qemu+unix:///system?socket=/proc/PID/root/run/libvirt/libvirt-sock (PID:
# /run/libvirtd.pid): the pair's own /run/libvirt hides the usual path.
#
# Every process of the namespace (libvirtd and the QEMUs it starts) is
# recognised at stop by its mount namespace, recorded at start, and only
# those are killed.
set -euo pipefail

die() { printf 'libvirt_pair: error: %s\n' "$*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: libvirt_pair.sh start|stop|env DIR"
cmd=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
SOCK=$DIR/sock/libvirt-sock
URI="qemu+unix:///system?socket=$SOCK"

answers() { virsh -c "$URI" version >/dev/null 2>&1; }

# Pids of the processes in the pair's mount namespace.
ns_pids() {
    local ns pid
    [ -s "$DIR/mntns" ] || return 0
    ns=$(cat "$DIR/mntns")
    for pid in /proc/[0-9]*; do
        [ "$(readlink "$pid/ns/mnt" 2>/dev/null)" = "$ns" ] && echo "${pid#/proc/}"
    done
    return 0
}

start() {
    [ "$(id -u)" = 0 ] || die "must run as root"
    command -v libvirtd >/dev/null || die "libvirtd is not installed"
    if [ -s "$DIR/libvirtd.pid" ] && kill -0 "$(cat "$DIR/libvirtd.pid")" 2>/dev/null && answers; then
        return 0
    fi
    mkdir -p "$DIR"/{run,lib,cache,log,sock}
    mkdir -p "$DIR"/lib/{images,qemu} "$DIR"/log/qemu "$DIR"/cache/qemu
    mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt
    rm -rf "$DIR/etc"
    mkdir -p "$DIR/etc"
    cp -a /etc/libvirt "$DIR/etc/libvirt"
    # Domains and networks defined on the system daemon are not this one's.
    rm -rf "$DIR"/etc/libvirt/qemu/* "$DIR"/etc/libvirt/secrets/* "$DIR"/etc/libvirt/nwfilter/*
    cat >"$DIR/etc/libvirt/libvirtd.conf" <<EOF
unix_sock_dir = "$DIR/sock"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
listen_tcp = 0
listen_tls = 0
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
log_outputs = "3:file:$DIR/log/libvirtd.log"
EOF
    cat >>"$DIR/etc/libvirt/qemu.conf" <<'EOF'
# libvirt_pair.sh
stdio_handler = "file"
cgroup_controllers = [ ]
migration_port_min = 49300
migration_port_max = 49399
EOF
    rm -f "$DIR/libvirtd.pid" "$DIR/mntns"
    # unshare execs the shell, which execs libvirtd: $! is the daemon.  It
    # gets none of our descriptors beyond 0-2 (under `flock`, it would hold
    # the lock of the system libvirtd as long as it runs).
    setsid unshare -m --propagation private -u bash -c '
        set -e
        D=$1
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"
        done
        mount -t tmpfs -o mode=0755 nimbus-lvpair /run/libvirt
        mount --bind "$D/lib" /var/lib/libvirt
        mount --bind "$D/cache" /var/cache/libvirt
        mount --bind "$D/log" /var/log/libvirt
        mount --bind "$D/etc/libvirt" /etc/libvirt
        hostname nimbus-lvpair
        readlink /proc/self/ns/mnt >"$D/mntns"
        exec libvirtd --config "$D/etc/libvirt/libvirtd.conf" --pid-file "$D/libvirtd.pid"
    ' bash "$DIR" </dev/null >"$DIR/libvirtd.out" 2>&1 &
    echo $! >"$DIR/daemon.pid"
    for _ in $(seq 150); do
        answers && return 0
        kill -0 "$(cat "$DIR/daemon.pid")" 2>/dev/null || break
        sleep 0.1
    done
    cat "$DIR/libvirtd.out" >&2 || true
    tail -20 "$DIR/log/libvirtd.log" >&2 2>/dev/null || true
    stop
    die "the second libvirtd does not answer at $URI"
}

stop() {
    local pid pids
    if answers; then
        for dom in $(virsh -q -c "$URI" list --all --uuid 2>/dev/null); do
            virsh -q -c "$URI" destroy "$dom" >/dev/null 2>&1 || true
            virsh -q -c "$URI" undefine --managed-save --nvram "$dom" >/dev/null 2>&1 ||
                virsh -q -c "$URI" undefine "$dom" >/dev/null 2>&1 || true
        done
    fi
    if [ -s "$DIR/daemon.pid" ]; then
        pid=$(cat "$DIR/daemon.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    # Whatever is left in the namespace (QEMU processes of a daemon that
    # died) goes too; the namespace and its mounts vanish with them.
    for sig in TERM KILL; do
        pids=$(ns_pids)
        [ -n "$pids" ] || break
        kill -s $sig $pids 2>/dev/null || true
        sleep 0.5
    done
    [ -z "$(ns_pids)" ] || die "processes of the pair still running: $(ns_pids | tr '\n' ' ')"
    rm -rf "$DIR"
}

print_env() {
    echo "NIMBUS_PAIR_URI='$URI'"
    local pid
    pid=$(cat /run/libvirtd.pid 2>/dev/null || true)
    [ -n "$pid" ] &&
        echo "NIMBUS_SYSTEM_URI='qemu+unix:///system?socket=/proc/$pid/root/run/libvirt/libvirt-sock'"
    return 0
}

case "$cmd" in
start) start; print_env ;;
env) print_env ;;
stop) stop ;;
*) die "unknown command '$cmd'" ;;
esac
