#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2317 # checks are called through `eventually`
# Scenario `basics`: what every node of the compose cluster does on its own. All five
# healthy with /healthz and management /health 200 on their published ports; the
# compose settings reach each node (/config); the token is required where it must be;
# PUT/GET/DELETE through each node; `compose stop` of a node drains and exits 0, and
# `compose start` brings it back healthy.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start

step "published ports: /healthz and /health without a token"
for n in "${NODES[@]}"; do
    code=$(curl -s -o "$TMP/body" -w '%{http_code}' -m 5 "http://127.0.0.1:808$n/healthz" || true)
    [[ $code == 200 && $(cat "$TMP/body") == ok ]] || fail "127.0.0.1:808$n/healthz answered $code"
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:908$n/health" || true)
    [[ $code == 200 ]] || fail "127.0.0.1:908$n/health answered $code"
done

step "each node's effective configuration comes from the compose file"
for n in "${NODES[@]}"; do
    mgmt GET "$n" /config
    expect_status 200 "GET :908$n/config"
    body_has "\"node_id\":\"node-$n\"" || fail "node $n /config: $BODY"
    body_has '"replication":3' || fail "node $n /config has no replication 3: $BODY"
    body_has "hypercache-$n:7946" || fail "node $n does not advertise hypercache-$n:7946: $BODY"
    [[ $BODY != *"$TOKEN"* ]] || fail "node $n /config shows the token"
done

step "the token is required (401 JSON UNAUTHORIZED) on client and management routes"
for url in "http://127.0.0.1:8081/v1/cache/k" "http://127.0.0.1:9082/cluster/members"; do
    code=$(curl -s -o "$TMP/body" -w '%{http_code}' -m 5 "$url" || true)
    if [[ $code != 401 ]] || ! grep -q '"code":"UNAUTHORIZED"' "$TMP/body"; then
        fail "$url without a token answered $code: $(cat "$TMP/body")"
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -H 'Authorization: Bearer wrong-token' "$url" || true)
    [[ $code == 401 ]] || fail "$url with a wrong token answered $code"
done
mgmt GET 2 /cluster/members
expect_status 200 "GET :9082/cluster/members with the token"
body_has '"id":"node-2"' || fail "node 2 does not list itself: $BODY"

step "PUT, GET, DELETE through each node"
for n in "${NODES[@]}"; do
    key="basics-$n"
    value="value of node $n, with spaces"
    put "$n" "$key" "$value"
    expect_status 200 "PUT $key on node $n"
    body_has '"stored":true' || fail "PUT $key: $BODY"
    get_is "$n" "$key" "$value" || fail "GET $key on node $n: $STATUS $BODY"
    grep -qi '^content-type: application/octet-stream' < <(curl -s -D - -o /dev/null -m 5 \
        -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:808$n/v1/cache/$key") ||
        fail "GET $key is not application/octet-stream"
    del "$n" "$key"
    expect_status 200 "DELETE $key on node $n"
    body_has '"deleted":true' || fail "DELETE $key: $BODY"
    get_missing "$n" "$key" || fail "GET $key after DELETE on node $n: $STATUS $BODY"
done

step "compose stop hypercache-5: SIGTERM drains and exits 0 within the grace period"
id5=$(container_of 5)
t0=$(now)
compose stop hypercache-5 >/dev/null 2>&1
code=$(docker inspect -f '{{.State.ExitCode}}' "$id5")
[[ $code == 0 ]] || fail "hypercache-5 exited $code after SIGTERM (want 0)"
docker logs "$id5" 2>&1 | grep -q 'stopped cleanly' || fail "hypercache-5 did not log 'stopped cleanly'"
step "stopped in $(since "$t0")s"
compose start hypercache-5 >/dev/null 2>&1
HYPERCACHE_UP_TIMEOUT=60 wait_healthy 5 || fail "hypercache-5 not healthy again after start"
get_missing 5 basics-5 || fail "restarted node 5 answers GET with $STATUS"
pass
