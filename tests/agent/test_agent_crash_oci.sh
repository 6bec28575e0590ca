#!/usr/bin/env bash
# nimbus-compute under kill -9 in the middle of starting an oci (runc)
# container with a port.  The agent runs in a network namespace of its own
# where the test does what the network agent does: a bridge with the
# gateway's address and the port's veth pair tap<id>/tpp<id>, one end on the
# bridge.  runc is reached through a wrapper (the agent's [hypervisor] runc)
# that stops at a named step, so the kill lands exactly there:
#
#   created   after "runc create": the container exists, its process waits,
#             the port's device is still on the node
#   moved     right after the port's device is moved into the container's
#             namespace, before it is renamed and configured (through an
#             ip wrapper first on the agent's PATH)
#   plugged   before "runc start": the device is inside the container as
#             eth0 with its address, the process has not run
#   random    kill -9 at a random moment (0-300 ms) after the instance's
#             directory appears, six times, each with a new instance
#
# After each kill the agent is started again and, within a few reconcile
# periods, the instance is ACTIVE with its port inside the container (eth0
# with the port's MAC and address in the container's network namespace,
# ping from the bridge answers), one container only; after delete nothing
# is left: no container in runc's state, no overlay mount, no instance
# directory, no cgroup, and the port's device is back on the node under its
# own name (the network agent's to remove), no other device there.
# Exits 77 without root, runc, nsenter or the test guest's rootfs.
set -uo pipefail

BUILD=${NIMBUS_BUILD:?}
SRC=${NIMBUS_SOURCE:?}
AGENT=$BUILD/compute-agent/nimbus-compute

skip() { echo "skipped: $*" >&2; exit 77; }
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }
[ "$(id -u)" = 0 ] || skip "not root"
[ -x "$AGENT" ] || skip "nimbus-compute not built"
REAL_RUNC=$(command -v runc) || skip "runc missing"
command -v nsenter >/dev/null || skip "nsenter missing"
GUEST=$BUILD/agent-test-guest
"$SRC/deploy/build-guest" "$GUEST" >&2 || skip "cannot build the test guest"
[ -f "$GUEST/rootfs.tar" ] || skip "no container rootfs in $GUEST"

ROOT=$(mktemp -d /tmp/nimbus-ocicrash-XXXXXX)
chmod 755 "$ROOT"
NS=ocicrash-${ROOT##*-}
ip netns add "$NS" 2>/dev/null || { rm -rf "$ROOT"; skip "cannot make a network namespace"; }
STATE=$ROOT/state
PORT_ID=5c3e9a1f-7b2d-4e8a-9c6f-1a2b3c4d5e6f
TAP=tap5c3e9a1f7b2   # The network agent's names: tap + 11 hex digits of the port id,
TPP=tpp5c3e9a1f7b2   # and the veth peer a container gets.
MAC=fa:16:3e:5c:3e:9a
ADDR=10.77.0.5
pid=
uuids=()
n() { ip netns exec "$NS" "$@"; }

cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    for u in "${uuids[@]}"; do
        "$REAL_RUNC" --root "$STATE/runc" delete --force "nimbus-$u" >/dev/null 2>&1
    done
    grep -o " $STATE/[^ ]*" /proc/mounts | while read -r m; do umount -l "$m"; done
    ip netns del "$NS" 2>/dev/null
    rm -rf "$ROOT"
}
trap cleanup EXIT

# The network agent's part: bridge, gateway address, veth pair.
n ip link set lo up
n ip link add nbr-crash type bridge
n ip addr add 10.77.0.1/24 dev nbr-crash
n ip link set nbr-crash up
veth() {
    n ip link show "$TAP" >/dev/null 2>&1 && return
    n ip link add "$TAP" type veth peer name "$TPP"
    n ip link set "$TAP" master nbr-crash mtu 1400 up
}
veth

mkdir -p "$ROOT/src"
ln -s "$GUEST/rootfs.tar" "$ROOT/src/busybox-rootfs"
SHA=$(sha512sum "$GUEST/rootfs.tar" | cut -d' ' -f1)

# runc behind a wrapper that stops at the step named in $ROOT/pause-at and
# waits there until the agent that ran it is gone (killed), then gives up
# without going on, as a runc whose caller died would leave things.
cat >"$ROOT/runc" <<EOF
#!/bin/sh
verb=\$3
step=\$(cat "$ROOT/pause-at" 2>/dev/null)
wait_for_kill() {
    : >"$ROOT/paused"
    while kill -0 \$PPID 2>/dev/null; do sleep 0.02; done
    exit 1
}
[ "\$verb" = start ] && [ "\$step" = plugged ] && wait_for_kill
"$REAL_RUNC" "\$@"
rc=\$?
[ "\$verb" = create ] && [ "\$step" = created ] && [ \$rc = 0 ] && wait_for_kill
exit \$rc
EOF
chmod 755 "$ROOT/runc"
# And ip, first on the agent's PATH, that stops right after moving the
# port's device into the container (before it is renamed and configured).
REAL_IP=$(command -v ip)
mkdir -p "$ROOT/bin"
cat >"$ROOT/bin/ip" <<EOF
#!/bin/sh
"$REAL_IP" "\$@"
rc=\$?
if [ "\$*" != "\${*#link set dev $TPP netns }" ] && [ "\$(cat "$ROOT/pause-at" 2>/dev/null)" = moved ]; then
    : >"$ROOT/paused"
    while kill -0 \$PPID 2>/dev/null; do sleep 0.02; done
    exit 1
fi
exit \$rc
EOF
chmod 755 "$ROOT/bin/ip"

cat >"$ROOT/agent.conf" <<EOF
[agent]
node = ocicrash
state_dir = $STATE
image_source_dir = $ROOT/src
reconcile_interval = 1
delete_grace = 2
stop_timeout = 2
network_agent = true
listen = 127.0.0.1
port = 0
[hypervisor]
type = oci
runc = $ROOT/runc
[source]
desired_file = $ROOT/desired.json
observed_file = $ROOT/observed.json
events_file = $ROOT/events.jsonl
EOF

# desired VERSION UUID DELETED
desired() {
    cat >"$ROOT/desired.json.tmp" <<EOF
{"version": $1, "instances": [{"uuid": "$2", "name": "ocicrash", "power_state": "running",
  "generation": 1, "deleted": $3,
  "flavor": {"vcpus": 1, "ram_mb": 64, "disk_gb": 1},
  "image": {"id": "busybox-rootfs", "disk_format": "raw", "container_format": "docker",
            "sha512": "$SHA"},
  "ports": [{"id": "$PORT_ID", "mac": "$MAC", "kind": "veth", "mtu": 1400,
             "fixed_ips": [{"ip_address": "$ADDR", "prefixlen": 24, "gateway": "10.77.0.1"}]}]}]}
EOF
    mv "$ROOT/desired.json.tmp" "$ROOT/desired.json"
}

start() {
    PATH="$ROOT/bin:$PATH" nsenter --net="/run/netns/$NS" "$AGENT" --config "$ROOT/agent.conf" \
        2>>"$ROOT/agent.log" &
    pid=$!
}
kill9() { kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=; }

# state UUID: the observed vm_state of the instance ("" when not reported).
state() {
    /usr/bin/python3 - "$ROOT/observed.json" "$1" <<'EOF' 2>/dev/null
import json, sys
o = json.load(open(sys.argv[1]))
print(next((i["vm_state"] for i in o["instances"] if i["uuid"] == sys.argv[2]), ""))
EOF
}
# wait_state SECONDS UUID STATE
wait_state() {
    local end=$((SECONDS + $1))
    while [ $SECONDS -lt $end ]; do
        [ "$(state "$2")" = "$3" ] && return 0
        sleep 0.1
    done
    return 1
}
runc_list() { "$REAL_RUNC" --root "$STATE/runc" list -q 2>/dev/null; }
cpid() {
    "$REAL_RUNC" --root "$STATE/runc" state "nimbus-$1" 2>/dev/null |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null
}
cstatus() {
    "$REAL_RUNC" --root "$STATE/runc" state "nimbus-$1" 2>/dev/null |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null
}

# check_active CASE UUID: ACTIVE with the port inside, one container.
check_active() {
    local c=$1 u=$2 t0=$SECONDS p
    wait_state 15 "$u" active || { fail "$c: not ACTIVE 15 s after the restart ($(state "$u"))"; return; }
    echo "$c: ACTIVE $((SECONDS - t0)) s after the restart" >&2
    [ "$(cstatus "$u")" = running ] || fail "$c: the container is $(cstatus "$u"), not running"
    [ "$(runc_list | wc -l)" = 1 ] || fail "$c: containers: $(runc_list | tr '\n' ' ')"
    p=$(cpid "$u")
    if [ -z "$p" ] || [ "$p" = 0 ]; then
        fail "$c: no container process"
        return
    fi
    local a
    a=$(nsenter -t "$p" -n ip -o addr show dev eth0 2>&1)
    echo "$a" | grep -q "inet $ADDR/24" || fail "$c: eth0 in the container has not $ADDR/24: $a"
    nsenter -t "$p" -n ip -o link show dev eth0 2>&1 | grep -q "link/ether $MAC" ||
        fail "$c: eth0 in the container has not the port's MAC"
    a=$(nsenter -t "$p" -n ip route 2>&1)
    echo "$a" | grep -q "default via 10.77.0.1 dev eth0" ||
        fail "$c: no default route via the gateway in the container: $a"
    n ip link show "$TPP" >/dev/null 2>&1 && fail "$c: $TPP is still on the node"
    n ping -c 1 -W 3 "$ADDR" >/dev/null || fail "$c: the container does not answer ping"
}

# check_deleted CASE UUID: nothing of the instance left.
check_deleted() {
    local c=$1 u=$2
    wait_state 20 "$u" deleted || fail "$c: delete did not converge ($(state "$u"))"
    [ -z "$(runc_list)" ] || fail "$c: containers left: $(runc_list | tr '\n' ' ')"
    grep -q " $STATE/" /proc/mounts && fail "$c: mounts left: $(grep " $STATE/" /proc/mounts)"
    [ -z "$(ls "$STATE/instances" 2>/dev/null)" ] ||
        fail "$c: instance directories left: $(ls "$STATE/instances")"
    for cg in /sys/fs/cgroup/nimbus/"$u" /sys/fs/cgroup/*/nimbus/"$u"; do
        [ -d "$cg" ] && fail "$c: cgroup left: $cg"
    done
    n ip link show "$TPP" >/dev/null 2>&1 || fail "$c: the port's device $TPP is not back on the node"
    local devs
    devs=$(n ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | tr '\n' ' ')
    [ "$devs" = "lo nbr-crash $TAP $TPP " ] || fail "$c: devices on the node: $devs"
}

# cycle CASE: one instance through create (killed as CASE says), restart,
# checks, delete, checks.
version=1
cycle() {
    local case=$1 u p a
    u=$(cat /proc/sys/kernel/random/uuid)
    uuids+=("$u")
    rm -f "$ROOT/paused" "$ROOT/observed.json"
    veth   # Made again if a failed cycle lost it, so each cycle is judged alone.
    if [ "$case" = random ]; then
        # A random moment of the create once it is under way (warm cache:
        # the instance directory, runc create, moving the device, runc
        # start take a few hundred ms together here).
        rm -f "$ROOT/pause-at"
        desired $version "$u" false
        start
        local end=$((SECONDS + 30))
        while [ ! -d "$STATE/instances/$u" ] && [ $SECONDS -lt $end ]; do sleep 0.01; done
        sleep "0.$((RANDOM % 3))$((RANDOM % 10))"
        kill9
        echo "random: killed the agent with the container '$(cstatus "$u")'" >&2
    else
        echo "$case" >"$ROOT/pause-at"
        desired $version "$u" false
        start
        local end=$((SECONDS + 60))
        while [ ! -f "$ROOT/paused" ] && [ $SECONDS -lt $end ] && kill -0 "$pid" 2>/dev/null; do
            sleep 0.05
        done
        if [ ! -f "$ROOT/paused" ]; then
            fail "$case: the agent never reached the step"
            kill9
            return
        fi
        p=$(cpid "$u")
        if [ "$case" = created ]; then
            [ "$(cstatus "$u")" = created ] || fail "created: container is '$(cstatus "$u")'"
            n ip link show "$TPP" >/dev/null 2>&1 || fail "created: $TPP already moved"
        elif [ "$case" = moved ]; then
            nsenter -t "$p" -n ip link show "$TPP" >/dev/null 2>&1 ||
                fail "moved: $TPP is not in the container under its own name"
        else
            a=$(nsenter -t "$p" -n ip -o addr show dev eth0 2>&1)
            echo "$a" | grep -q "$ADDR" ||
                fail "plugged: eth0 with $ADDR is not in the container (pid $p) yet: $a"
        fi
        kill9
        rm -f "$ROOT/pause-at"
        echo "$case: killed the agent with the container '$(cstatus "$u")'" >&2
    fi
    version=$((version + 1))
    start
    check_active "$case" "$u"
    desired $version "$u" true
    version=$((version + 1))
    check_deleted "$case" "$u"
    kill9
}

# ONLY=<case> runs that case alone, twice (when looking into one).
cases=${ONLY:+$ONLY $ONLY}
for c in ${cases:-created moved plugged random random random random random random}; do
    cycle "$c"
done

echo "total ${SECONDS}s" >&2
[ $failed = 0 ] || { echo "--- agent log" >&2; tail -60 "$ROOT/agent.log" >&2; exit 1; }
exit 0
