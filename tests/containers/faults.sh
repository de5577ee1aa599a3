#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2317 # checks are called through `eventually`
# Scenario `faults`: a fault matrix under a recorded history. tests/containers/history.py
# runs the workload: writer threads put, delete and read their own keys at QUORUM (some
# reads at ONE) through every node, the faulted ones included, and record every
# operation. This script injects one fault at a time and holds it HYPERCACHE_FAULTS_HOLD
# seconds (8; longer than failure detection: 1 s heartbeat, 3 s suspect timeout), and at
# least half that long after every node has seen it (the others list the node dead or
# left, which is asserted), so that the ring really changes:
#   kill-9           SIGKILL node 3, start it again
#   sigstop          SIGSTOP node 4, SIGCONT
#   partition-1-4    node 5 disconnected from the peers network
#   partition-2-3    nodes 1 and 2 moved from the peers network to a network of their own
#   drain            graceful stop of node 2 (drain, leave), start it again
#   rolling-restart  graceful stop and start of nodes 1..5, one at a time
#   join             a sixth node joins through its seeds, then leaves gracefully
# After each heal every node must see 5 alive members and a sample of keys must read the
# same through every node (the time it took is reported). At the end the checker reads
# every key at QUORUM through every node: no acknowledged write lost, no deleted key
# back, no key with QUORUM writes acknowledged on both sides of a partition, no QUORUM
# read outside the rule during the run; the violating keys are printed with their
# histories. HYPERCACHE_FAULTS_LONG=1: holds of 20 s and three rounds of the matrix
# (HYPERCACHE_FAULTS_HOLD and HYPERCACHE_FAULTS_ROUNDS set them one by one);
# HYPERCACHE_FAULTS_HISTORY=FILE keeps every operation, one JSON object a line.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start

if [[ ${HYPERCACHE_FAULTS_LONG:-0} == 1 ]]; then
    HOLD=${HYPERCACHE_FAULTS_HOLD:-20} ROUNDS=${HYPERCACHE_FAULTS_ROUNDS:-3}
else
    HOLD=${HYPERCACHE_FAULTS_HOLD:-8} ROUNDS=${HYPERCACHE_FAULTS_ROUNDS:-1}
fi
CONVERGE=60 # seconds a heal may take until the sample of keys agrees
CONTROL=$TMP/control
HISTORY=$TMP/history
mkdir -p "$HISTORY"
: >"$CONTROL"

eventually 30 "every node sees 5 alive members" all_see_five_alive "${NODES[@]}"
declare -A ID
for n in "${NODES[@]}"; do ID[$n]=$(container_of "$n"); done
PEERS=$(peers_network "${ID[1]}")
[[ -n $PEERS ]] || fail "hypercache-1 is on no *_peers network"
FIVE="1:8081 2:8082 3:8083 4:8084 5:8085"

# ---- membership as the nodes see it ----

# Sets SEEN to the ids (numbers, comma-separated, sorted) node N lists in STATE (alive by
# default); false when N does not answer.
seen_by() {
    local state=${2:-alive}
    SEEN=
    mgmt GET "$1" /cluster/members
    [[ $STATUS == 200 ]] || return 1
    SEEN=$(python3 -c 'import json, sys
ids = sorted(int(m["id"].split("-")[-1]) for m in json.load(sys.stdin)["members"] if m["state"] == sys.argv[1])
print(",".join(map(str, ids)))' "$state" <"$TMP/body")
}
# views_are NODES_CSV WANT_CSV: every node in NODES_CSV sees exactly WANT_CSV alive.
views_are() {
    local n
    for n in ${1//,/ }; do
        seen_by "$n" || { LAST_MISSING="node $n does not answer"; return 1; }
        [[ $SEEN == "$2" ]] || { LAST_MISSING="node $n sees $SEEN alive, want $2"; return 1; }
    done
}
# member_is NODES_CSV ID STATE: every node in NODES_CSV lists node-ID in STATE.
member_is() {
    local n
    for n in ${1//,/ }; do
        seen_by "$n" "$3" || { LAST_MISSING="node $n does not answer"; return 1; }
        [[ ,$SEEN, == *,$2,* ]] || { LAST_MISSING="node $n does not list node-$2 $3"; return 1; }
    done
}
# partition_seen SIDE_A SIDE_B: each side sees exactly itself alive and the other dead.
partition_seen() {
    views_are "$1" "$1" && views_are "$2" "$2" || return 1
    local id
    for id in ${2//,/ }; do member_is "$1" "$id" dead || return 1; done
    for id in ${1//,/ }; do member_is "$2" "$id" dead || return 1; done
}

# ---- the workload and its control file ----

event() { printf '%s %s\n' "$(now)" "$*" >>"$CONTROL"; }
checker_running() { kill -0 "$CHECKER" 2>/dev/null; }
# run_for SECONDS [SINCE]: lets the workload run until SECONDS after SINCE (default now).
run_for() {
    local until
    until=$(awk -v s="${2:-$(now)}" -v h="$1" 'BEGIN { printf "%.3f", s + h }')
    while awk -v u="$until" -v t="$(now)" 'BEGIN { exit !(t < u) }'; do
        checker_running || fail "the history checker exited during the run"
        sleep 0.5
    done
}
# hold T0: lets the workload run until HOLD seconds after T0 (when the fault began), and
# at least HOLD/2 seconds from now (the fault was just seen by every node).
hold() {
    local left
    left=$(awk -v s="$1" -v h="$HOLD" -v t="$(now)" 'BEGIN { r = s + h - t; printf "%.3f", (r > h / 2 ? r : h / 2) }')
    run_for "$left"
}
# healed NAME: waits for 5 healthy containers, 5 alive members on every node and the
# checker's convergence measurement of NAME.
healed() {
    wait_healthy "${NODES[@]}" || fail "$1: the cluster did not become healthy again"
    eventually 60 "$1: every node sees 5 alive members again" all_see_five_alive "${NODES[@]}"
    eventually $((CONVERGE + 10)) "$1: the checker measured convergence" test -s "$HISTORY/converged-$1"
    local took
    took=$(cat "$HISTORY/converged-$1")
    if [[ $took == timeout ]]; then
        step "$1: a sample of keys did not read the same through every node within ${CONVERGE}s of the heal"
    else
        step "$1: a sample of keys reads the same through every node ${took}s after the heal"
    fi
    run_for 2
}

python3 "$(dirname "${BASH_SOURCE[0]}")/history.py" --control "$CONTROL" --dir "$HISTORY" \
    --nodes "$FIVE" --converge-deadline "$CONVERGE" --max-seconds $((300 + ROUNDS * (7 * HOLD + 200))) \
    ${HYPERCACHE_FAULTS_HISTORY:+--save "$HYPERCACHE_FAULTS_HISTORY"} &
CHECKER=$!
CLEANUP+=("kill $CHECKER")

# ---- the faults ----

fault_kill9() { # NAME
    t0=$(now)
    event fault "$1"
    step "$1: SIGKILL hypercache-3 for ${HOLD}s"
    compose kill -s SIGKILL hypercache-3 >/dev/null 2>&1 || fail "compose kill failed"
    eventually 15 "$1: nodes 1,2,4,5 declare node 3 dead" member_is 1,2,4,5 3 dead
    hold "$t0"
    event heal "$1"
    compose start hypercache-3 >/dev/null 2>&1 || fail "compose start hypercache-3 failed"
    healed "$1"
}

fault_sigstop() { # NAME
    t0=$(now)
    event fault "$1" paused=4
    step "$1: SIGSTOP hypercache-4 for ${HOLD}s"
    docker kill -s SIGSTOP "${ID[4]}" >/dev/null
    CLEANUP+=("docker kill -s SIGCONT ${ID[4]}")
    eventually 15 "$1: nodes 1,2,3,5 declare node 4 dead" member_is 1,2,3,5 4 dead
    hold "$t0"
    event heal "$1"
    docker kill -s SIGCONT "${ID[4]}" >/dev/null
    unset 'CLEANUP[-1]'
    healed "$1"
}

# disconnect N NET / connect N NET: node N off / on a network under its service name.
disconnect() { docker network disconnect "$2" "${ID[$1]}"; }
connect() { docker network connect --alias "hypercache-$1" "$2" "${ID[$1]}"; }
networks_of() {
    docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{println $k}}{{end}}' "${ID[$1]}" |
        grep -v '^$' | sort | tr '\n' ' '
}

fault_partition_1_4() { # NAME
    step "$1: hypercache-5 disconnected from $PEERS for ${HOLD}s"
    CLEANUP+=("docker network connect --alias hypercache-5 $PEERS ${ID[5]}")
    disconnect 5 "$PEERS"
    t0=$(now)
    event fault "$1" sides=5/1,2,3,4
    [[ $(networks_of 5) != *"$PEERS "* ]] || fail "hypercache-5 is still on $PEERS: $(networks_of 5)"
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 http://127.0.0.1:8085/healthz || true)
    [[ $code == 200 ]] || fail "hypercache-5's client port is unreachable after the disconnect ($code)"
    eventually 20 "$1: node 5 sees only itself alive, nodes 1-4 see node 5 dead" partition_seen 5 1,2,3,4
    hold "$t0"
    event heal "$1"
    connect 5 "$PEERS"
    unset 'CLEANUP[-1]'
    healed "$1"
}

fault_partition_2_3() { # NAME
    local split=${PEERS}-split n
    step "$1: hypercache-1 and hypercache-2 moved from $PEERS to $split for ${HOLD}s"
    docker network rm "$split" >/dev/null 2>&1 || true
    docker network create "$split" >/dev/null || fail "docker network create $split failed"
    CLEANUP+=("docker network disconnect -f $split ${ID[1]}; docker network disconnect -f $split ${ID[2]};
        docker network connect --alias hypercache-1 $PEERS ${ID[1]}; docker network connect --alias hypercache-2 $PEERS ${ID[2]};
        docker network rm $split")
    for n in 1 2; do
        disconnect "$n" "$PEERS"
        connect "$n" "$split"
    done
    t0=$(now)
    event fault "$1" sides=1,2/3,4,5
    for n in 1 2; do
        [[ $(networks_of "$n") == *"$split "* && $(networks_of "$n") != *"$PEERS "* ]] ||
            fail "hypercache-$n is on: $(networks_of "$n")"
    done
    for n in 1 2; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:808$n/healthz" || true)
        [[ $code == 200 ]] || fail "hypercache-$n's client port is unreachable after the move ($code)"
    done
    eventually 20 "$1: nodes 1,2 see only each other alive, nodes 3,4,5 only each other" partition_seen 1,2 3,4,5
    hold "$t0"
    event heal "$1"
    for n in 1 2; do
        disconnect "$n" "$split"
        connect "$n" "$PEERS"
    done
    docker network rm "$split" >/dev/null
    unset 'CLEANUP[-1]'
    healed "$1"
}

fault_drain() { # NAME
    t0=$(now)
    event fault "$1"
    step "$1: graceful stop of hypercache-2 (drain, leave) for ${HOLD}s"
    compose stop hypercache-2 >/dev/null 2>&1 || fail "compose stop hypercache-2 failed"
    [[ $(docker inspect -f '{{.State.ExitCode}}' "${ID[2]}") == 0 ]] || fail "hypercache-2 did not exit 0 on SIGTERM"
    eventually 15 "$1: nodes 1,3,4,5 list node 2 as left" member_is 1,3,4,5 2 left
    hold "$t0"
    event heal "$1"
    compose start hypercache-2 >/dev/null 2>&1 || fail "compose start hypercache-2 failed"
    healed "$1"
}

fault_rolling_restart() { # NAME
    local n
    event fault "$1"
    step "$1: graceful stop and start of nodes 1..5, one at a time"
    for n in "${NODES[@]}"; do
        compose stop "hypercache-$n" >/dev/null 2>&1 || fail "compose stop hypercache-$n failed"
        [[ $(docker inspect -f '{{.State.ExitCode}}' "${ID[$n]}") == 0 ]] || fail "hypercache-$n did not exit 0 on SIGTERM"
        compose start "hypercache-$n" >/dev/null 2>&1 || fail "compose start hypercache-$n failed"
        if ((n == ${NODES[-1]})); then event heal "$1"; fi
        HYPERCACHE_UP_TIMEOUT=60 wait_healthy "$n" || fail "hypercache-$n not healthy after start"
        eventually 30 "$1: node $n restarted, every node sees 5 alive members" all_see_five_alive "${NODES[@]}"
    done
    healed "$1"
}

fault_join() { # NAME
    local name=${PEERS%_peers}-faults-hypercache-6 env=() kv port
    for port in 8086 9086; do
        ! curl -s -o /dev/null -m 2 "http://127.0.0.1:$port/" || fail "127.0.0.1:$port is in use; node 6 needs it"
    done
    # Node 6 gets the compose file's settings (read from node 1), its own identity and
    # the five nodes as seeds.
    while IFS= read -r kv; do
        case $kv in
        HYPERCACHE_NODE_ID=* | HYPERCACHE_DIST_ADDR=* | HYPERCACHE_SEEDS=*) ;;
        HYPERCACHE_*) env+=(-e "$kv") ;;
        esac
    done < <(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "${ID[1]}")
    docker rm -f "$name" >/dev/null 2>&1 || true
    t0=$(now)
    event fault "$1"
    step "$1: hypercache-6 joins through its seeds for ${HOLD}s, then leaves"
    CLEANUP+=("docker rm -f $name")
    docker run -d --name "$name" --network "$PEERS" --network-alias hypercache-6 \
        -p 127.0.0.1:8086:8080 -p 127.0.0.1:9086:8081 --stop-timeout 30 "${env[@]}" \
        -e HYPERCACHE_NODE_ID=node-6 -e HYPERCACHE_DIST_ADDR=hypercache-6:7946 \
        -e HYPERCACHE_SEEDS=node-1@hypercache-1:7946,node-2@hypercache-2:7946,node-3@hypercache-3:7946,node-4@hypercache-4:7946,node-5@hypercache-5:7946 \
        "$HYPERCACHE_IMAGE" >/dev/null || fail "docker run of hypercache-6 failed"
    eventually 30 "$1: every node sees 6 alive members" views_are 1,2,3,4,5,6 1,2,3,4,5,6
    event nodes "$FIVE" 6:8086
    hold "$t0"
    event nodes "$FIVE"
    event heal "$1"
    docker stop -t 30 "$name" >/dev/null || fail "docker stop of hypercache-6 failed"
    [[ $(docker inspect -f '{{.State.ExitCode}}' "$name") == 0 ]] || fail "hypercache-6 did not exit 0 on SIGTERM"
    eventually 15 "$1: nodes 1-5 list node 6 as left" member_is 1,2,3,4,5 6 left
    docker rm "$name" >/dev/null
    unset 'CLEANUP[-1]'
    healed "$1"
}

started=$(now)
step "workload running; ${HOLD}s per fault, $ROUNDS round(s)"
run_for 3
for ((round = 1; round <= ROUNDS; round++)); do
    sfx=
    if ((ROUNDS > 1)); then sfx=-r$round; fi
    fault_kill9 "kill-9$sfx"
    fault_sigstop "sigstop$sfx"
    fault_partition_1_4 "partition-1-4$sfx"
    fault_partition_2_3 "partition-2-3$sfx"
    fault_drain "drain$sfx"
    fault_rolling_restart "rolling-restart$sfx"
    fault_join "join$sfx"
done

step "faults done after $(since "$started")s; stopping the workload"
event stop
eventually 60 "every node sees 5 alive members" all_see_five_alive "${NODES[@]}"
event final
rc=0
wait "$CHECKER" || rc=$?
unset 'CLEANUP[-1]'
((rc == 0)) || fail "the history check $( ((rc == 1)) && echo "found violations" || echo "did not complete") (exit $rc; summary above)"
pass
