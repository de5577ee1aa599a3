#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2317 # checks are called through `eventually`
# Scenario `sigkill`: a node killed outright (SIGKILL, no drain) in the middle of a
# write loop. Every write that was acknowledged (200) is served byte-exact by the four
# survivors, and by the killed node once it is started again; the survivors keep
# acknowledging writes after the kill.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start

eventually 30 "every node sees 5 alive members" all_see_five_alive "${NODES[@]}"

total=${HYPERCACHE_SIGKILL_WRITES:-150}
kill_at=$((total / 3))
survivors=(1 2 4 5)
id3=$(container_of 3)
acked=0 acked_after=0 refused_after=0 last_refused=0
deadline=$((SECONDS + 90))
step "write loop of $total PUTs through nodes 1,2,4,5; SIGKILL hypercache-3 after write $kill_at"
for ((i = 1; i <= total && SECONDS < deadline; i++)); do
    if ((i == kill_at + 1)); then
        compose kill -s SIGKILL hypercache-3 >"$TMP/kill.log" 2>&1 &
        kill_pid=$!
    fi
    n=${survivors[i % 4]}
    value="sigkill value $i $RANDOM"
    put "$n" "sk-$i" "$value"
    if [[ $STATUS == 200 ]]; then
        echo "sk-$i $value" >>"$TMP/acked"
        acked=$((acked + 1))
        ((i > kill_at)) && acked_after=$((acked_after + 1))
    elif ((i <= kill_at)); then
        fail "PUT sk-$i through node $n answered $STATUS before any fault: $BODY"
    else
        refused_after=$((refused_after + 1))
        last_refused=$i
    fi
    sleep 0.02 # pace the loop so that writes overlap the kill
done
((i > total)) || fail "the write loop did not finish within 90s (at write $i)"
wait "$kill_pid" || { cat "$TMP/kill.log" >&2; fail "compose kill failed"; }
[[ $(docker inspect -f '{{.State.Running}} {{.State.ExitCode}}' "$id3") == "false 137" ]] ||
    fail "hypercache-3 was not killed: $(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$id3")"
step "$acked of $total writes acknowledged; after the kill $acked_after acknowledged, $refused_after refused"
((acked_after > 0)) || fail "no write was acknowledged after the kill"
((last_refused <= total - 10)) || fail "write $last_refused, among the last 10, was refused"

eventually 30 "every acknowledged write byte-exact on the four survivors" keys_everywhere 1,2,4,5 "$TMP/acked"

step "start hypercache-3 again"
t0=$(now)
compose start hypercache-3 >/dev/null 2>&1
HYPERCACHE_UP_TIMEOUT=60 wait_healthy 3 || fail "hypercache-3 not healthy after start"
left=$(awk -v s="$(since "$t0")" 'BEGIN { r = 60 - s; print (r > 1 ? int(r) : 1) }')
eventually "$left" "the restarted node 3 serves every acknowledged write" keys_everywhere 3 "$TMP/acked"
pass
