#!/usr/bin/env bash
# End-to-end: deploy/dev brings up a cloud whose API endpoints answer with
# the OpenStack version documents, 'up' is idempotent, 'status' reports it,
# the real openstack client works once identity does, and 'down' leaves no
# process of ours behind.  Each group of checks is one function; the list at
# the bottom says which run.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

identity() { echo "http://$HOST:$NIMBUS_IDENTITY_PORT"; }
compute()  { echo "http://$HOST:$NIMBUS_COMPUTE_PORT"; }
network()  { echo "http://$HOST:$NIMBUS_NETWORK_PORT"; }

identity_available() {
    openstack_as nimbus-admin token issue -f value -c id >/dev/null 2>&1
}

location_header() {
    http_get "$(identity)/" >/dev/null
    grep -qi '^location: *http' "$E2E_HEADERS" || { echo "no Location header:"; cat "$E2E_HEADERS"; return 1; }
}

checks_identity_versions() {
    check "identity GET / is 300 with a v3 stable version" expect_get "$(identity)/" 300 '
        (.versions.values[0].id | startswith("v3"))
        and .versions.values[0].status == "stable"
        and any(.versions.values[0]["media-types"][]; .type == "application/vnd.openstack.identity-v3+json")
        and any(.versions.values[0].links[]; .rel == "self")'
    check "identity GET / has a Location header" location_header
    check "identity GET /v3 is 200 with version v3.x" expect_get "$(identity)/v3" 200 '
        (.version.id | test("^v3\\.[0-9]+$")) and .version.status == "stable"'
}

checks_compute_versions() {
    local v21='.id == "v2.1" and .status == "CURRENT" and (.version | test("^2\\.[0-9]+$")) and .min_version == "2.1"'
    check "compute GET / lists v2.1 CURRENT" expect_get "$(compute)/" 200 "any(.versions[]; $v21)"
    check "compute GET /v2.1 is the v2.1 version" expect_get "$(compute)/v2.1" 200 ".version | $v21"
}

checks_network_versions() {
    check "network GET / lists v2.0 CURRENT" expect_get "$(network)/" 200 \
        'any(.versions[]; .id == "v2.0" and .status == "CURRENT")'
    # Without a token, /v2.0 is 200 until identity exists; after, 200 (the
    # resource list, as Neutron serves it) or 401 (token required).
    if identity_available; then
        check "network GET /v2.0 without a token is 200 or 401" network_v20_200_or_401
    else
        check "network GET /v2.0 is 200" expect_get "$(network)/v2.0" 200
    fi
}

network_v20_200_or_401() {
    local code
    code=$(http_get "$(network)/v2.0")
    case "$code" in
    200|401) return 0 ;;
    *) echo "GET $(network)/v2.0: status $code, expected 200 or 401"; head -c 2000 "$E2E_BODY"; echo; return 1 ;;
    esac
}

metrics_have_nimbus() {
    local code
    code=$(http_get "$1/metrics")
    [ "$code" = 200 ] || { echo "GET $1/metrics: status $code"; return 1; }
    grep -q '^nimbus_' "$E2E_BODY" || { echo "no line starting with nimbus_:"; head -20 "$E2E_BODY"; return 1; }
}

checks_health_and_metrics() {
    local base
    for base in "$(identity)" "$(compute)" "$(network)"; do
        check "GET $base/healthz is 200" expect_get "$base/healthz" 200
        check "GET $base/metrics has nimbus_ lines" metrics_have_nimbus "$base"
    done
}

second_up_is_safe() {
    local out
    out=$("$DEV" up 2>&1) || { echo "$out"; return 1; }
    grep -q 'nimbus-api already running' <<<"$out" || { echo "$out"; return 1; }
    grep -q 'PostgreSQL already running' <<<"$out" || { echo "$out"; return 1; }
}

status_reports_running() {
    local out
    out=$("$DEV" status 2>&1) || { echo "$out"; return 1; }
    grep -Eq 'nimbus-api +running.*health 200' <<<"$out" || { echo "$out"; return 1; }
    grep -Eq 'postgresql +running' <<<"$out" || { echo "$out"; return 1; }
}

checks_dev_script() {
    check "deploy/dev up a second time is safe" second_up_is_safe
    check "deploy/dev status reports running and healthy" status_reports_running
    check "clouds.yaml has nimbus-admin and nimbus-demo" \
        grep -q 'nimbus-demo:' "$NIMBUS_STATE/clouds.yaml"
    check "admin password written" test -s "$NIMBUS_STATE/admin-password"
}

checks_openstack_client() {
    check "openstack token issue (admin)" openstack_as nimbus-admin token issue
    check "openstack catalog list (admin)" openstack_as nimbus-admin catalog list
    check "openstack token issue (demo)" openstack_as nimbus-demo token issue
}

image() { echo "http://$HOST:$NIMBUS_IMAGE_PORT"; }

checks_image() {
    check "image GET / is 300 with a v2 CURRENT version" expect_get "$(image)/" 300 \
        'any(.versions[]; (.id | startswith("v2")) and .status == "CURRENT")'
    check "GET $(image)/healthz is 200" expect_get "$(image)/healthz" 200
    check "the catalog lists the image service" catalog_has_image
    check "the bootable test image is active (demo sees it)" test_image_active
    check "the dashboard is served at $(identity)/dashboard/" dashboard_served
}

# deploy/dev points [dashboard] dir at the repository's dashboard/ and lets
# its origin call the image service (CORS).
dashboard_served() {
    local code
    code=$(http_get "$(identity)/dashboard/")
    [ "$code" = 200 ] && grep -q '<title>Nimbus dashboard</title>' "$E2E_BODY" \
        || { echo "GET $(identity)/dashboard/: $code"; head -c 500 "$E2E_BODY"; return 1; }
    code=$(http_get -X OPTIONS -H "Origin: $(identity)" -H 'Access-Control-Request-Method: GET' \
        "$(image)/v2/images")
    [ "$code" = 204 ] && grep -qi "^access-control-allow-origin: $(identity)" "$E2E_HEADERS" \
        || { echo "image preflight from the dashboard: $code"; cat "$E2E_HEADERS"; return 1; }
}

catalog_has_image() {
    local out
    out=$(openstack_as nimbus-admin catalog show image -f json) || return 1
    jq -e '.endpoints | length > 0' <<<"$out" >/dev/null || { echo "$out"; return 1; }
}

test_image_active() {
    local out
    out=$(openstack_as nimbus-demo image list -f json) || return 1
    jq -e 'map(select(.Name == "nimbus-test" and .Status == "active")) | length == 1' <<<"$out" >/dev/null \
        || { echo "$out"; return 1; }
}

# A server from the test image on the demo network, booted by this
# machine's nimbus-compute under QEMU, then deleted.
server_boots() {
    local out status
    out=$(openstack_as nimbus-demo server create --flavor m1.tiny --image nimbus-test \
          --network demo-net --wait -f json e2e-vm 2>&1) || { echo "$out"; return 1; }
    status=$(jq -r .status <<<"$out")
    [ "$status" = ACTIVE ] || { echo "status $status"; echo "$out"; return 1; }
}

# check() runs each function in a subshell: what later checks need goes
# through files.
vm_ip()  { cat "$NIMBUS_STATE/e2e-vm.ip" 2>/dev/null; }
vm_tap() { cat "$NIMBUS_STATE/e2e-vm.tap" 2>/dev/null; }

# The server's address on demo-net as the API shows it, and its port wired
# (ACTIVE) by nimbus-network.
server_has_address() {
    local out port ip tap
    out=$(openstack_as nimbus-demo server show -f json e2e-vm) || return 1
    ip=$(jq -r '.addresses | tostring' <<<"$out" | grep -oE '10\.10\.0\.[0-9]+' | head -1)
    [ -n "$ip" ] || { echo "no demo-net address:"; jq .addresses <<<"$out"; return 1; }
    echo "$ip" > "$NIMBUS_STATE/e2e-vm.ip"
    out=$(openstack_as nimbus-demo port list --server e2e-vm -f json) || return 1
    jq -e 'length == 1 and .[0].Status == "ACTIVE"' <<<"$out" >/dev/null \
        || { echo "port list --server:"; echo "$out"; return 1; }
    port=$(jq -r '.[0].ID' <<<"$out")
    tap=tap$(tr -d - <<<"$port" | cut -c1-11)
    echo "$tap" > "$NIMBUS_STATE/e2e-vm.tap"
    ip link show "$tap" >/dev/null || { echo "no device $tap on this node"; return 1; }
}

# The guest asks DHCP for an address (busybox udhcpc) and prints the lease
# on its serial console; 'console log show' reads it through the API.
guest_leases_its_address() {
    local out ip deadline=$((SECONDS + 120))
    ip=$(vm_ip)
    [ -n "$ip" ] || { echo "no address known"; return 1; }
    while :; do
        out=$(openstack_as nimbus-demo console log show e2e-vm 2>&1) || true
        grep -q "nimbus-guest: lease $ip on eth0" <<<"$out" && return 0
        if [ $SECONDS -ge $deadline ]; then
            echo "no 'nimbus-guest: lease $ip on eth0' in the console log:"
            tail -n 30 <<<"$out"
            return 1
        fi
        sleep 3
    done
}

console_url_is_the_proxy() {
    local out
    out=$(openstack_as nimbus-demo console url show --novnc -f json e2e-vm) || return 1
    jq -e --arg p ":${NIMBUS_CONSOLE_PORT:-6083}/" '.url | contains($p) and contains("token=")' \
        <<<"$out" >/dev/null || { echo "$out"; return 1; }
}

server_deletes() {
    openstack_as nimbus-demo server delete --wait e2e-vm || return 1
    ! openstack_as nimbus-demo server show e2e-vm >/dev/null 2>&1
}

# nimbus-network removes the port's tap once the port is gone.
tap_removed() {
    local deadline=$((SECONDS + 30)) tap
    tap=$(vm_tap)
    [ -n "$tap" ] || { echo "no tap known"; return 1; }
    while ip link show "$tap" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { echo "$tap still exists"; return 1; }
        sleep 1
    done
}

checks_compute() {
    check "deploy/dev runs nimbus-compute on this machine" test -f "$NIMBUS_STATE/compute-agent.conf"
    check "deploy/dev runs nimbus-network on this machine" test -f "$NIMBUS_STATE/network-agent.conf"
    check "openstack server create --wait (test image, demo-net) reaches ACTIVE" server_boots
    check "the server has a demo-net address and its port is wired (ACTIVE, tap on this node)" server_has_address
    check "the guest gets that address by DHCP (console log show)" guest_leases_its_address
    check "openstack console url show --novnc points at the node's console proxy" console_url_is_the_proxy
    check "openstack server delete --wait" server_deletes
    check "the server's tap is removed" tap_removed
}

nothing_of_ours_runs() {
    local left
    left=$(pgrep -af -- "$NIMBUS_STATE" | grep -v "^$$ " || true)
    [ -z "$left" ] || { echo "still running:"; echo "$left"; return 1; }
}

checks_down() {
    check "deploy/dev down" "$DEV" down
    E2E_CLOUD_UP=0
    check "no process of ours is left (daemons, guests, postgres)" nothing_of_ours_runs
    check "deploy/dev status reports stopped (exit 3)" bash -c '"$1" status >/dev/null; [ $? -eq 3 ]' _ "$DEV"
}

e2e_cloud_up
checks_identity_versions
checks_compute_versions
checks_network_versions
checks_health_and_metrics
checks_dev_script
checks_openstack_client
checks_image
checks_compute
checks_down
e2e_finish
