#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2317 # checks are called through `eventually`
# Scenario `membership`: a fresh cluster forms on its own. Within 30 s of `up`, every
# node's /cluster/members lists node-1..node-5 alive, at hypercache-N:7946.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start

limit=${HYPERCACHE_MEMBERSHIP_TIMEOUT:-30}
left=$(awk -v l="$limit" -v s="$(since "$UP_STARTED")" 'BEGIN { r = l - s; print (r > 1 ? int(r) : 1) }')
eventually "$left" "every node sees 5 alive members" all_see_five_alive "${NODES[@]}"
step "5 alive members on every node $(since "$UP_STARTED")s after up"
for n in "${NODES[@]}"; do
    mgmt GET "$n" /cluster/members
    for m in "${NODES[@]}"; do
        body_has "\"id\":\"node-$m\"" || fail "node $n does not list node-$m: $BODY"
        body_has "hypercache-$m:7946" || fail "node $n has no address hypercache-$m:7946: $BODY"
    done
    body_has '"replication":3' || fail "node $n reports another replication: $BODY"
done
pass
