# Helpers for the end-to-end tests (sourced, not run).  An end-to-end test
# starts its own cloud with deploy/dev in a temporary state directory on free
# ports, checks it from outside (curl, the real openstack client), and takes
# it down again on exit, whatever happened.
#
#   . "$(dirname "$0")/lib.sh"
#   e2e_cloud_up                 # deploy/dev up; 'down' and cleanup on exit
#   check "what is checked" COMMAND...
#   e2e_finish                   # summary; exit status 1 if a check failed
#
# tests/run passes NIMBUS_REPO, NIMBUS_BUILD_DIR and NIMBUS_SKIP_BUILD=1.

E2E_REPO=${NIMBUS_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export NIMBUS_BUILD_DIR=${NIMBUS_BUILD_DIR:-$E2E_REPO/build}
DEV=$E2E_REPO/deploy/dev
E2E_PASSED=0
E2E_FAILED=0
E2E_CLOUD_UP=0

e2e_log() { printf '[%s] %s\n' "${0##*/}" "$*"; }

# e2e_free_port: a TCP port nothing listens on, not handed out before.
E2E_PORTS_TAKEN=" "
e2e_free_port() {
    local p
    for _ in $(seq 500); do
        p=$(( 10000 + RANDOM % 22000 ))   # below the ephemeral range (32768-)
        case "$E2E_PORTS_TAKEN" in *" $p "*) continue ;; esac
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        E2E_PORTS_TAKEN="$E2E_PORTS_TAKEN$p "
        echo "$p"
        return 0
    done
    return 1
}

e2e_cleanup() {
    local rc=$?
    if [ "$E2E_CLOUD_UP" = 1 ]; then
        "$DEV" down >/dev/null 2>&1 || e2e_log "deploy/dev down failed during cleanup"
    fi
    if [ -n "${NIMBUS_STATE:-}" ] && [ -d "$NIMBUS_STATE" ]; then
        if [ "$rc" -ne 0 ] && [ -f "$NIMBUS_STATE/log/nimbus-api.log" ]; then
            e2e_log "last lines of nimbus-api.log:"
            tail -n 30 "$NIMBUS_STATE/log/nimbus-api.log"
        fi
        rm -rf "$NIMBUS_STATE" "$E2E_BODY" "$E2E_HEADERS"
    fi
    return $rc
}

# e2e_cloud_up: a fresh cloud in a temporary state directory on free ports.
# Exports NIMBUS_STATE, the NIMBUS_*_PORT variables, OS_CLIENT_CONFIG_FILE
# and HOST; fails the test when 'up' fails.
e2e_cloud_up() {
    NIMBUS_STATE=$(mktemp -d /tmp/nimbus-e2e.XXXXXX)
    export NIMBUS_STATE
    E2E_BODY=$NIMBUS_STATE.http.body
    E2E_HEADERS=$NIMBUS_STATE.http.headers
    trap e2e_cleanup EXIT
    trap 'exit 143' TERM INT
    export NIMBUS_PG_PORT=$(e2e_free_port) NIMBUS_IDENTITY_PORT=$(e2e_free_port) \
        NIMBUS_COMPUTE_PORT=$(e2e_free_port) NIMBUS_NETWORK_PORT=$(e2e_free_port) \
        NIMBUS_IMAGE_PORT=$(e2e_free_port) NIMBUS_AGENT_PORT=$(e2e_free_port) \
        NIMBUS_CONSOLE_PORT=$(e2e_free_port)
    export HOST=${NIMBUS_HOST:-127.0.0.1}
    export OS_CLIENT_CONFIG_FILE=$NIMBUS_STATE/clouds.yaml
    e2e_log "deploy/dev up (state $NIMBUS_STATE, identity port $NIMBUS_IDENTITY_PORT)"
    E2E_CLOUD_UP=1
    if ! "$DEV" up > "$NIMBUS_STATE.up.log" 2>&1; then
        cat "$NIMBUS_STATE.up.log"
        rm -f "$NIMBUS_STATE.up.log"
        e2e_log "FAIL: deploy/dev up"
        exit 1
    fi
    rm -f "$NIMBUS_STATE.up.log"
    check "deploy/dev up succeeded" true
}

# check DESCRIPTION COMMAND...: runs COMMAND, counts and prints the outcome.
# COMMAND's output is shown only when it fails.
check() {
    local desc=$1 out
    shift
    if out=$("$@" 2>&1); then
        E2E_PASSED=$((E2E_PASSED + 1))
        printf '  ok    %s\n' "$desc"
    else
        E2E_FAILED=$((E2E_FAILED + 1))
        printf '  FAIL  %s\n' "$desc"
        [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/        /' | head -n 40
    fi
    return 0
}

e2e_finish() {
    e2e_log "$E2E_PASSED passed, $E2E_FAILED failed"
    [ "$E2E_FAILED" -eq 0 ]
}

# http_get URL: fetches URL into $E2E_BODY and $E2E_HEADERS (set by
# e2e_cloud_up); prints the status code.
http_get() {
    curl -s -m 10 -D "$E2E_HEADERS" -o "$E2E_BODY" -w '%{http_code}' "$@"
}

# expect_get URL CODE [JQ-FILTER]: the GET answers CODE and, when given, the
# body satisfies the jq filter (which must yield true).
expect_get() {
    local url=$1 want=$2 filter=${3:-} code
    code=$(http_get "$url")
    if [ "$code" != "$want" ]; then
        echo "GET $url: status $code, expected $want"; head -c 2000 "$E2E_BODY"; echo
        return 1
    fi
    if [ -n "$filter" ] && ! jq -e "$filter" "$E2E_BODY" >/dev/null; then
        echo "GET $url: body does not satisfy: $filter"; head -c 2000 "$E2E_BODY"; echo
        return 1
    fi
}

# openstack_as CLOUD ARGS...: the real client against our clouds.yaml.
openstack_as() {
    local cloud=$1
    shift
    OS_CLOUD=$cloud /usr/bin/openstack "$@"
}
