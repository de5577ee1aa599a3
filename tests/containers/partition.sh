#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2317 # checks are called through `eventually`
# Scenario `partition`: one node cut off from its peers with `docker network disconnect`
# (its client port stays reachable: client traffic has its own network). Its QUORUM
# writes fail with 503 QUORUM_FAILED while the other four keep accepting writes; after
# `docker network connect` the cluster converges and the node serves the newest values.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start

eventually 30 "every node sees 5 alive members" all_see_five_alive "${NODES[@]}"
majority=(1 2 3 4)

step "10 keys written with all five connected"
for i in {1..10}; do
    put 1 "pt-$i" "old value $i"
    expect_status 200 "PUT pt-$i through node 1"
    echo "pt-$i old value $i" >>"$TMP/old"
done
eventually 10 "old values byte-exact on node 5" keys_everywhere 5 "$TMP/old"

id5=$(container_of 5)
net=$(peers_network "$id5")
[[ -n $net ]] || fail "hypercache-5 is on no *_peers network"
step "docker network disconnect $net hypercache-5"
docker network disconnect "$net" "$id5"
# Reconnect even if the scenario fails half-way (compose down removes it all anyway).
CLEANUP+=("docker network connect --alias hypercache-5 $net $id5")
code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 http://127.0.0.1:8085/healthz || true)
[[ $code == 200 ]] || fail "hypercache-5's client port is unreachable after the disconnect ($code)"

iso=0
isolated_write_fails() {
    iso=$((iso + 1))
    put 5 "pt-isolated-$iso" "isolated $iso" consistency=quorum
    [[ $STATUS == 503 ]] && body_has '"code":"QUORUM_FAILED"'
}
eventually 30 "a QUORUM write through the isolated node 5 answers 503 QUORUM_FAILED" isolated_write_fails

step "for 8 s: node 5 keeps refusing QUORUM writes, nodes 1-4 accept every write"
for i in {1..8}; do
    isolated_write_fails || fail "QUORUM write $iso through the isolated node 5 answered $STATUS: $BODY"
    n=${majority[i % 4]}
    put "$n" "pt-$i" "new value $i" consistency=quorum
    expect_status 200 "PUT pt-$i through node $n during the partition"
    n=${majority[(i + 1) % 4]}
    put "$n" "pt-major-$i" "majority value $i" consistency=quorum
    expect_status 200 "PUT pt-major-$i through node $n during the partition"
    sleep 1
done
{
    for i in {1..10}; do
        if ((i <= 8)); then echo "pt-$i new value $i"; else echo "pt-$i old value $i"; fi
    done
    for i in {1..8}; do echo "pt-major-$i majority value $i"; done
} >"$TMP/newest"
eventually 10 "nodes 1-4 serve the newest values during the partition" keys_everywhere 1,2,3,4 "$TMP/newest"

step "docker network connect $net hypercache-5"
t0=$(now)
# The alias restores the name peers know it by (compose set it at creation).
docker network connect --alias hypercache-5 "$net" "$id5"
CLEANUP=()
eventually 30 "every node sees 5 alive members again" all_see_five_alive "${NODES[@]}"
rm -f "$TMP"/confirmed-*
eventually 60 "all five nodes serve the newest values" keys_everywhere 1,2,3,4,5 "$TMP/newest"
step "converged $(since "$t0")s after the reconnect"
pass
