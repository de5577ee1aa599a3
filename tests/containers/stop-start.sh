#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2317 # checks are called through `eventually`
# Scenario `stop-start`: a node stopped gracefully and brought back. With 50 keys
# written, `compose stop hypercache-3` (SIGTERM: drain, announce leaving, hand over)
# exits 0; 50 more PUTs through node 1 all answer 200; the four survivors serve all 100
# keys; after `compose start hypercache-3` node 3 serves all 100 within 60 s.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start

eventually 30 "every node sees 5 alive members" all_see_five_alive "${NODES[@]}"

write_keys() { # FROM TO FILE: PUT ss-FROM..ss-TO through node 1, each must answer 200
    local i
    for ((i = $1; i <= $2; i++)); do
        put 1 "ss-$i" "stop-start value $i"
        expect_status 200 "PUT ss-$i through node 1"
        echo "ss-$i stop-start value $i" >>"$3"
    done
}
step "50 PUTs through node 1 with all five up"
write_keys 1 50 "$TMP/keys"

step "compose stop hypercache-3"
id3=$(container_of 3)
compose stop hypercache-3 >/dev/null 2>&1
[[ $(docker inspect -f '{{.State.ExitCode}}' "$id3") == 0 ]] || fail "hypercache-3 did not exit 0 on SIGTERM"
node3_not_alive() {
    mgmt GET 1 /cluster/members
    [[ $STATUS == 200 ]] && ! grep -Eq '"id":"node-3"[^}]*"state":"alive"|"state":"alive"[^}]*"id":"node-3"' "$TMP/body"
}
eventually 15 "node 1 no longer lists node-3 alive" node3_not_alive

step "50 more PUTs through node 1 while node 3 is down"
write_keys 51 100 "$TMP/keys"
eventually 30 "all 100 keys byte-exact on the four survivors" keys_everywhere 1,2,4,5 "$TMP/keys"

step "compose start hypercache-3"
t0=$(now)
compose start hypercache-3 >/dev/null 2>&1
HYPERCACHE_UP_TIMEOUT=60 wait_healthy 3 || fail "hypercache-3 not healthy after start"
left=$(awk -v s="$(since "$t0")" 'BEGIN { r = 60 - s; print (r > 1 ? int(r) : 1) }')
eventually "$left" "node 3 serves all 100 keys" keys_everywhere 3 "$TMP/keys"
step "node 3 served all 100 keys $(since "$t0")s after start"
eventually 30 "every node sees 5 alive members again" all_see_five_alive "${NODES[@]}"
pass
