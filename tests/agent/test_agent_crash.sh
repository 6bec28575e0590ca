#!/usr/bin/env bash
# nimbus-compute under kill -9, with real libvirtd + QEMU and the file
# source: kill -9 during create, during a soft reboot and during delete,
# restart, and the node converges: every desired instance ACTIVE exactly
# once (no duplicate domain), the reboot's generation applied, deleted
# instances leave no domain, overlay or directory.  Also /healthz, /metrics
# and a clean exit on SIGTERM.  Exits 77 when libvirtd or the guest is
# missing.
set -uo pipefail

BUILD=${NIMBUS_BUILD:?}
SRC=${NIMBUS_SOURCE:?}
AGENT=$BUILD/compute-agent/nimbus-compute
V="virsh -q -c qemu:///system"

skip() { echo "skipped: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; failed=1; }
[ "$(id -u)" = 0 ] || skip "not root"
$V version >/dev/null 2>&1 || skip "libvirtd not reachable (run deploy/libvirt-setup)"
[ -x "$AGENT" ] || skip "nimbus-compute not built"
GUEST=$BUILD/agent-test-guest
"$SRC/deploy/build-guest" "$GUEST" >&2 || skip "cannot build the test guest"

ROOT=$(mktemp -d /tmp/nimbus-crash-XXXXXX)
chmod 755 "$ROOT"
UA=$(cat /proc/sys/kernel/random/uuid)
UB=$(cat /proc/sys/kernel/random/uuid)
pid=
failed=0
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    for u in $UA $UB; do
        $V destroy "nimbus-$u" >/dev/null 2>&1
        $V undefine --managed-save "nimbus-$u" >/dev/null 2>&1
    done
    rm -rf "$ROOT"
}
trap cleanup EXIT

mkdir -p "$ROOT/src"
ln -s "$GUEST/vmlinuz" "$ROOT/src/aki-crash"
ln -s "$GUEST/initrd.img" "$ROOT/src/ari-crash"
ln -s "$GUEST/disk.qcow2" "$ROOT/src/ami-crash"
sha() { sha512sum "$1" | cut -d' ' -f1; }
SK=$(sha "$GUEST/vmlinuz") SR=$(sha "$GUEST/initrd.img") SD=$(sha "$GUEST/disk.qcow2")

cat >"$ROOT/agent.conf" <<EOF
[agent]
node = crash-test
state_dir = $ROOT/state
image_source_dir = $ROOT/src
reconcile_interval = 1
delete_grace = 2
stop_timeout = 5
listen = 127.0.0.1
port = 0
[hypervisor]
type = libvirt
[source]
desired_file = $ROOT/desired.json
observed_file = $ROOT/observed.json
events_file = $ROOT/events.jsonl
EOF

# desired VERSION  "UUID POWER GEN REBOOT(- for none) DELETED"...
desired() {
    local ver=$1 first=1 u p g rb del
    shift
    {
        printf '{"version": %s, "instances": [' "$ver"
        for spec in "$@"; do
            read -r u p g rb del <<<"$spec"
            [ "$rb" = - ] && rb=
            [ $first = 1 ] || printf ','
            first=0
            printf '{"uuid":"%s","name":"crash-%s","flavor":{"vcpus":1,"ram_mb":128,"disk_gb":1},' "$u" "${u:0:4}"
            printf '"image":{"id":"ami-crash","disk_format":"ami","sha512":"%s","properties":{"kernel_id":"aki-crash","ramdisk_id":"ari-crash","os_command_line":"console=ttyS0 quiet"}},' "$SD"
            printf '"kernel":{"id":"aki-crash","disk_format":"aki","sha512":"%s"},' "$SK"
            printf '"ramdisk":{"id":"ari-crash","disk_format":"ari","sha512":"%s"},' "$SR"
            printf '"power_state":"%s","generation":%s,"reboot":"%s","deleted":%s}' "$p" "$g" "$rb" "$del"
        done
        printf ']}\n'
    } >"$ROOT/desired.json.tmp"
    mv "$ROOT/desired.json.tmp" "$ROOT/desired.json"
}

start() {
    "$AGENT" --config "$ROOT/agent.conf" 2>>"$ROOT/agent.log" &
    pid=$!
}
kill9() { kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=; }

# wait_for SECONDS PYTHON-EXPRESSION over o (observed), by_uuid
wait_for() {
    local t=$1 expr=$2 end=$((SECONDS + $1))
    while [ $SECONDS -lt $end ]; do
        if [ -f "$ROOT/observed.json" ] && /usr/bin/python3 - "$ROOT/observed.json" "$UA" "$UB" <<EOF 2>/dev/null
import json, sys
o = json.load(open(sys.argv[1]))
by = {i["uuid"]: i for i in o["instances"]}
UA, UB = sys.argv[2], sys.argv[3]
sys.exit(0 if ($expr) else 1)
EOF
        then return 0; fi
        sleep 0.2
    done
    echo "timed out after ${t}s waiting for: $expr" >&2
    cat "$ROOT/observed.json" >&2 2>/dev/null
    return 1
}
domains() { $V list --all --name | grep -c -e "nimbus-$UA" -e "nimbus-$UB"; }

# --- kill -9 during create --------------------------------------------------
t0=$SECONDS
desired 1 "$UA running 1 - false" "$UB running 1 - false"
start
# Kill as soon as the first step is under way (image fetch / overlay / define).
for _ in $(seq 100); do [ -d "$ROOT/state/instances" ] && break; sleep 0.02; done
sleep 0.3
kill9
echo "killed during create; domains so far: $(domains)" >&2
start
wait_for 60 'by.get(UA, {}).get("vm_state") == "active" and by.get(UB, {}).get("vm_state") == "active"' ||
    fail "create did not converge after kill -9"
[ "$(domains)" = 2 ] || fail "expected exactly 2 Nimbus domains, got $(domains)"
echo "create converged after kill -9 in $((SECONDS - t0)) s" >&2

# /healthz and /metrics
port=$(sed -n 's/.*\/healthz and \/metrics on 127.0.0.1:\([0-9]*\).*/\1/p' "$ROOT/agent.log" | tail -1)
curl -sf "http://127.0.0.1:$port/healthz" | grep -q ok || fail "/healthz"
curl -sf "http://127.0.0.1:$port/metrics" | grep -q '^nimbus_compute_reconcile_passes_total [1-9]' || fail "/metrics"

# Console output through the agent (what os-getConsoleOutput will use).
t1=$SECONDS
ok=0
# TCG boots take 5-15 s here, far more on a loaded machine.
for _ in $(seq 900); do
    if curl -sf "http://127.0.0.1:$port/v1/instances/$UA/console?length=50" | grep -q 'nimbus-guest: ready'; then
        ok=1; break
    fi
    sleep 0.2
done
[ $ok = 1 ] || fail "console output never showed the guest's 'ready' line"
echo "guest console 'ready' $((SECONDS - t1)) s after convergence" >&2
n=$(curl -sf "http://127.0.0.1:$port/v1/instances/$UA/console?length=2" | wc -l)
[ "$n" -le 2 ] || fail "console length=2 gave $n lines"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/instances/not-a-uuid/console")
[ "$code" = 400 ] || fail "console of a bad id answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/instances/$(cat /proc/sys/kernel/random/uuid)/console")
[ "$code" = 404 ] || fail "console of an unknown instance answered $code"

# --- kill -9 during a soft reboot -----------------------------------------
desired 2 "$UA running 2 soft false" "$UB running 1 - false"
sleep 1.2
kill9
start
wait_for 60 'by.get(UA, {}).get("generation") == 2 and by[UA]["vm_state"] == "active"' ||
    fail "reboot did not converge after kill -9"
[ "$(domains)" = 2 ] || fail "expected 2 domains after the reboot, got $(domains)"

# --- a guest that powers itself off: SHUTOFF, not restarted ----------------
$V destroy "nimbus-$UB" >/dev/null
wait_for 20 'by[UB]["vm_state"] == "stopped" and by[UB]["power_state"] == "shutoff"' ||
    fail "a guest powered off from outside was not reported stopped"
sleep 2
[ "$($V domstate "nimbus-$UB")" = "shut off" ] || fail "the stopped guest was restarted"
grep -q '"event":"power-off-by-guest"' "$ROOT/events.jsonl" || fail "no power-off-by-guest event"

# --- kill -9 during delete ------------------------------------------------
desired 3 "$UA running 2 - true" "$UB shutoff 2 - true"
sleep 0.6
kill9
start
wait_for 60 'by.get(UA, {}).get("vm_state") == "deleted" and by.get(UB, {}).get("vm_state") == "deleted"' ||
    fail "delete did not converge after kill -9"
[ "$(domains)" = 0 ] || fail "domains left after delete: $(domains)"
left=$(ls "$ROOT/state/instances" | wc -l)
[ "$left" = 0 ] || fail "instance directories left after delete: $left"

# --- SIGTERM: clean exit ----------------------------------------------------
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ $rc = 0 ] || fail "exit status $rc after SIGTERM"

echo "total ${SECONDS}s" >&2
[ $failed = 0 ] || { echo "--- agent log" >&2; tail -40 "$ROOT/agent.log" >&2; exit 1; }
exit 0
