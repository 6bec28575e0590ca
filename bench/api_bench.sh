#!/usr/bin/env bash
# bench/api_bench.sh: load figures for nimbus-api.  Starts nimbus-api against
# a throwaway PostgreSQL (deploy/pg-cluster in a temporary directory) on free
# ports, runs each benchmark with wrk, prints requests/s, p50 and p99
# latency and the daemon's resident memory, then stops everything.  It only
# prints figures; it never judges them.
#
#   bench/api_bench.sh [BENCHMARK...]     default: all of them
#
# Environment: NIMBUS_BUILD_DIR (default <repo>/build), NIMBUS_SKIP_BUILD=1,
# BENCH_WORKERS ([api] workers, 1),
# BENCH_THREADS (2), BENCH_CONNECTIONS (64), BENCH_DURATION (10s).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${NIMBUS_BUILD_DIR:-$REPO/build}
case "$BUILD" in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
DURATION=${BENCH_DURATION:-10s}
WORKERS=${BENCH_WORKERS:-1}
PW_OPSLIMIT=2
PW_MEMLIMIT_KIB=65536
API=$BUILD/api-server/nimbus-api
MANAGE=$BUILD/api-server/nimbus-manage

# ---------------------------------------------------------------------------
# Benchmarks: one function each, named bench_NAME, listed in BENCHMARKS.
# Each calls run_wrk with a label, a URL and optionally a wrk Lua script
# (for headers such as X-Auth-Token, or for POST bodies).

BENCHMARKS=(identity_discovery token_validate token_issue_rescope token_issue_password)

bench_identity_discovery() {
    run_wrk "GET /v3 (identity discovery)" "http://127.0.0.1:$IDENTITY_PORT/v3"
}

# GET /v3/auth/tokens with the token validating itself: signature check,
# revocation check, role lookup.
bench_token_validate() {
    local token
    token=$(issue_token) || { log "no token (identity not available); token_validate skipped"; return 0; }
    printf 'wrk.headers["X-Auth-Token"] = "%s"\nwrk.headers["X-Subject-Token"] = "%s"\n' \
        "$token" "$token" > "$TMP/token.lua"
    run_wrk "GET /v3/auth/tokens (validate)" "http://127.0.0.1:$IDENTITY_PORT/v3/auth/tokens" "$TMP/token.lua"
}

# POST /v3/auth/tokens with the token method: an unscoped token re-scoped
# to the admin project (signature check, one database round trip, signing).
bench_token_issue_rescope() {
    local token
    token=$(issue_token) || { log "no token; token_issue_rescope skipped"; return 0; }
    cat > "$TMP/rescope.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"auth":{"identity":{"methods":["token"],"token":{"id":"$token"}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}'
LUA
    run_wrk "POST /v3/auth/tokens (re-scope)" "http://127.0.0.1:$IDENTITY_PORT/v3/auth/tokens" "$TMP/rescope.lua"
}

# POST /v3/auth/tokens with the password method: bounded by Argon2id on
# libuv's thread pool (never cached).  Fewer connections: each request costs
# tens of milliseconds of CPU.
bench_token_issue_password() {
    [ -n "${ADMIN_PASSWORD:-}" ] || { log "no bootstrap; token_issue_password skipped"; return 0; }
    cat > "$TMP/password.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"$ADMIN_PASSWORD"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}'
LUA
    echo "Argon2id parameters: opslimit ${PW_OPSLIMIT}, memlimit ${PW_MEMLIMIT_KIB} KiB (nimbus defaults: libsodium interactive)"
    CONNECTIONS=8 run_wrk "POST /v3/auth/tokens (password)" "http://127.0.0.1:$IDENTITY_PORT/v3/auth/tokens" "$TMP/password.lua"
}

# issue_token: a project-scoped admin token (needs nimbus-manage bootstrap).
issue_token() {
    [ -n "${ADMIN_PASSWORD:-}" ] || return 1
    local body
    body=$(printf '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"%s"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}' "$ADMIN_PASSWORD")
    curl -s -m 10 -o /dev/null -D - -H 'Content-Type: application/json' -d "$body" \
        "http://127.0.0.1:$IDENTITY_PORT/v3/auth/tokens" \
        | awk 'tolower($1) == "x-subject-token:" { sub(/\r$/, "", $2); print $2; found = 1 } END { exit !found }'
}

# ---------------------------------------------------------------------------

log() { printf 'bench: %s\n' "$*" >&2; }

# Resident memory of nimbus-api: the process, plus its workers when
# [api] workers > 1.
rss_kib() {
    local total=0 p kib
    for p in "$API_PID" $(pgrep -P "$API_PID" 2>/dev/null); do
        kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
        total=$((total + ${kib:-0}))
    done
    echo "$total"
}

# run_wrk LABEL URL [LUA-SCRIPT]: one wrk run; prints one line of figures.
run_wrk() {
    local label=$1 url=$2 script=${3:-} out rps p50 p99 non2xx errors
    local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency)
    [ -n "$script" ] && args+=(-s "$script")
    out=$(wrk "${args[@]}" "$url" 2>&1) || { echo "$out" >&2; log "wrk failed for $label"; return 1; }
    echo "$out" > "$TMP/wrk-$(echo "$label" | tr -c 'a-zA-Z0-9' _).txt"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
    errors=$(awk '/Socket errors:/ { sub(/.*Socket errors: */, ""); print }' <<<"$out")
    printf '%-36s %12s req/s   p50 %9s   p99 %9s   RSS %s KiB%s%s\n' \
        "$label" "${rps:-?}" "${p50:-?}" "${p99:-?}" "$(rss_kib)" \
        "${non2xx:+   non-2xx/3xx $non2xx}" "${errors:+   socket errors: $errors}"
}

free_port() {
    local p
    for _ in $(seq 500); do
        p=$(( 10000 + RANDOM % 22000 ))   # below the ephemeral range (32768-)
        case " ${PORTS_TAKEN:-} " in *" $p "*) continue ;; esac
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        PORTS_TAKEN="${PORTS_TAKEN:-} $p"
        echo "$p"
        return 0
    done
    return 1
}

API_PID=
TMP=$(mktemp -d /tmp/nimbus-bench.XXXXXX)
chmod 0755 "$TMP"
cleanup() {
    if [ -n "$API_PID" ] && kill -0 "$API_PID" 2>/dev/null; then
        kill -TERM "$API_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$API_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$API_PID" 2>/dev/null || true
    fi
    (cd / && "$REPO/deploy/pg-cluster" stop "$TMP/pg") >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${BENCHMARKS[@]}")
for b in "${selected[@]}"; do
    declare -F "bench_$b" >/dev/null || { log "unknown benchmark '$b' (have: ${BENCHMARKS[*]})"; exit 2; }
done

"$REPO/deploy/dev" deps bench >&2
if [ "${NIMBUS_SKIP_BUILD:-}" != 1 ]; then
    [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" "$REPO" >&2
    ninja -C "$BUILD" >&2
fi

PG_PORT=$(free_port); IDENTITY_PORT=$(free_port); COMPUTE_PORT=$(free_port); NETWORK_PORT=$(free_port)
conninfo=$(cd / && "$REPO/deploy/pg-cluster" start "$TMP/pg" "$PG_PORT")
mkdir -p "$TMP/keys"; chmod 0700 "$TMP/keys"
cat > "$TMP/nimbus.conf" <<CONF
[api]
host = 127.0.0.1
identity_port = $IDENTITY_PORT
compute_port = $COMPUTE_PORT
network_port = $NETWORK_PORT
workers = $WORKERS
[database]
connection = $conninfo
[identity]
key_dir = $TMP/keys
password_opslimit = $PW_OPSLIMIT
password_memlimit_kib = $PW_MEMLIMIT_KIB
[log]
level = warn
CONF
"$MANAGE" --config "$TMP/nimbus.conf" db sync >&2
if "$MANAGE" help 2>&1 | grep -qw keys; then
    "$MANAGE" --config "$TMP/nimbus.conf" keys setup >&2
fi
if "$MANAGE" help 2>&1 | grep -qw bootstrap; then
    ADMIN_PASSWORD=bench-$RANDOM$RANDOM
    "$MANAGE" --config "$TMP/nimbus.conf" bootstrap --password "$ADMIN_PASSWORD" >&2
fi

"$API" --config "$TMP/nimbus.conf" </dev/null 2>"$TMP/nimbus-api.log" &
API_PID=$!
for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$IDENTITY_PORT/healthz")" = 200 ] && break
    kill -0 "$API_PID" 2>/dev/null || { tail -20 "$TMP/nimbus-api.log" >&2; log "nimbus-api exited"; exit 1; }
    sleep 0.1
done

echo "nimbus-api $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') ($WORKERS worker(s)) on $(nproc) cores; wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency"
echo "RSS before: $(rss_kib) KiB"
for b in "${selected[@]}"; do
    "bench_$b"
done
echo "RSS after:  $(rss_kib) KiB"
