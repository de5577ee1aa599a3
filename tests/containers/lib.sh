# shellcheck shell=bash
# shellcheck source-path=SCRIPTDIR
# Helpers for the container scenarios: a fresh cluster per scenario, HTTP calls to the
# loopback-published ports only, polling with deadlines, assertions, and cleanup that
# always runs (container logs first when the scenario failed).
#
# A scenario script:
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#     scenario_start [--no-cluster]
#     ... steps, each `step "what"`, then checks that call `fail` ...
#     pass
set -euo pipefail
# shellcheck source=../../scripts/lib/cluster.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib" && pwd)/cluster.sh"

SCENARIO=$(basename "$0" .sh)
HTTP_TIMEOUT=${HYPERCACHE_HTTP_TIMEOUT:-10}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/hypercache-$SCENARIO.XXXXXX")
UP_STARTED=
CLUSTER_STARTED=0
STATUS=
BODY=
LAST_MISSING=
# Extra cleanup commands of the scenario (containers it started outside compose).
CLEANUP=()

step() { log "[$SCENARIO] $*"; }
fail() {
    log "[$SCENARIO] FAIL: $*"
    exit 1
}
pass() {
    log "[$SCENARIO] PASS"
    exit 0
}

on_exit() {
    local rc=$? c
    trap - EXIT TERM INT
    set +e
    if ((rc != 0)); then
        log "[$SCENARIO] failed (exit $rc); cluster state and logs follow"
        print_cluster_logs
    fi
    for c in "${CLEANUP[@]}"; do
        eval "$c" >/dev/null 2>&1
    done
    if ((!CLUSTER_STARTED)); then
        :
    elif [[ ${HYPERCACHE_KEEP_CLUSTER:-0} == 1 ]]; then
        log "[$SCENARIO] HYPERCACHE_KEEP_CLUSTER=1: cluster left running (scripts/cluster-down removes it)"
    else
        compose down --volumes --remove-orphans >/dev/null 2>&1
    fi
    rm -rf "$TMP"
    exit "$rc"
}

# Checks the engine, installs cleanup, makes sure the image exists and (unless
# --no-cluster) starts a fresh cluster and waits until its five nodes are healthy.
# UP_STARTED is the moment `up` was called.
scenario_start() {
    if ! docker_available; then
        echo "skipped: no Docker engine"
        exit 0
    fi
    detect_compose
    trap on_exit EXIT
    trap 'exit 143' TERM INT
    if [[ ${HYPERCACHE_TEST_IMAGE_BUILT:-0} != 1 ]]; then
        step "building the image offline"
        build_image_offline
        export HYPERCACHE_TEST_IMAGE_BUILT=1
    fi
    [[ ${1:-} == --no-cluster ]] && return 0
    step "starting a fresh 5-node cluster"
    CLUSTER_STARTED=1
    compose down --volumes --remove-orphans >/dev/null 2>&1 || true
    UP_STARTED=$(now)
    compose up -d --no-build --remove-orphans >/dev/null 2>&1 || fail "compose up failed"
    wait_healthy "${NODES[@]}" || fail "the cluster did not become healthy"
    step "5 containers healthy $(since "$UP_STARTED")s after up"
}

# ---- HTTP (loopback-published ports only) ----

# req METHOD URL [curl args...]: sends the request with the token; sets STATUS (000 when
# no answer), BODY (text) and leaves the raw body in $TMP/body.
req() {
    local method=$1 url=$2
    shift 2
    : >"$TMP/body"
    STATUS=$(curl -s -o "$TMP/body" -w '%{http_code}' -m "$HTTP_TIMEOUT" --connect-timeout 3 \
        -X "$method" -H "Authorization: Bearer $TOKEN" "$@" "$url" 2>/dev/null) || true
    [[ $STATUS =~ ^[0-9]{3}$ ]] || STATUS=000
    BODY=$(cat "$TMP/body")
}
# client METHOD N PATH [curl args...]: node N's client API (127.0.0.1:808N).
client() {
    local method=$1 n=$2 path=$3
    shift 3
    req "$method" "http://127.0.0.1:808$n$path" "$@"
}
# mgmt METHOD N PATH [curl args...]: node N's management API (127.0.0.1:908N).
mgmt() {
    local method=$1 n=$2 path=$3
    shift 3
    req "$method" "http://127.0.0.1:908$n$path" "$@"
}
# put N KEY VALUE [QUERY]: PUT the value's exact bytes through node N.
put() { client PUT "$1" "/v1/cache/$2${4:+?$4}" --data-binary "$3"; }
# get N KEY / del N KEY
get() { client GET "$1" "/v1/cache/$2"; }
del() { client DELETE "$1" "/v1/cache/$2"; }

# True when node N answers GET KEY with 200 and exactly the bytes of VALUE.
get_is() {
    get "$1" "$2"
    [[ $STATUS == 200 ]] && printf '%s' "$3" | cmp -s - "$TMP/body"
}
# True when node N answers GET KEY with 404 and "code":"NOT_FOUND".
get_missing() {
    get "$1" "$2"
    [[ $STATUS == 404 ]] && body_has '"code":"NOT_FOUND"'
}
# True when the last body contains STRING (JSON compared without spaces).
body_has() { [[ ${BODY//[[:space:]]/} == *"$1"* ]]; }

# expect_status CODE WHAT...: fails unless the last request answered CODE.
expect_status() {
    local want=$1
    shift
    [[ $STATUS == "$want" ]] || fail "$* answered $STATUS (want $want): $BODY"
}

# Sets ALIVE to the number of members node N's /cluster/members reports alive (0 when
# it does not answer 200).
alive_members() {
    ALIVE=0
    mgmt GET "$1" /cluster/members
    [[ $STATUS == 200 ]] || return 0
    ALIVE=$(grep -o '"state"[[:space:]]*:[[:space:]]*"alive"' "$TMP/body" | wc -l | tr -d ' ')
}
# True when every node in "$@" reports all five nodes alive.
all_see_five_alive() {
    local n
    for n in "$@"; do
        alive_members "$n"
        if [[ $ALIVE != 5 ]]; then
            LAST_MISSING="node $n sees $ALIVE alive"
            return 1
        fi
    done
}

# eventually SECONDS WHAT COMMAND...: polls COMMAND until it succeeds; fails the
# scenario with WHAT after SECONDS. Prints how long it took.
eventually() {
    local limit=$1 what=$2 t0
    shift 2
    t0=$(now)
    LAST_MISSING=
    local deadline=$((SECONDS + limit))
    until "$@"; do
        ((SECONDS < deadline)) ||
            fail "$what: not true within ${limit}s${LAST_MISSING:+ (still missing: $LAST_MISSING)} (last answer ${STATUS:-none}: ${BODY:0:300})"
        sleep 0.25
    done
    step "$what ($(since "$t0")s)"
}

# keys_everywhere NODES_CSV KEYFILE: true when each node in NODES_CSV serves every
# "key value" line of KEYFILE byte-exact. Lines already confirmed on a node are
# remembered in $TMP so a poll only retries what is still missing.
keys_everywhere() {
    local nodes=$1 file=$2 n key value missing=0 done_file
    LAST_MISSING=
    for n in ${nodes//,/ }; do
        done_file="$TMP/confirmed-$n-$(basename "$file")"
        touch "$done_file"
        while read -r key value; do
            grep -qxF "$key" "$done_file" && continue
            if get_is "$n" "$key" "$value"; then
                echo "$key" >>"$done_file"
            else
                missing=$((missing + 1))
                LAST_MISSING="hypercache-$n: $key (answered $STATUS)"
            fi
        done <"$file"
    done
    ((missing == 0))
}

# Name of the compose network that carries peer traffic (<project>_peers).
peers_network() {
    docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{println $k}}{{end}}' "$1" |
        grep -E '_peers$' | head -n1
}
