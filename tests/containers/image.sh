#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2317 # checks are called through `eventually`
# Scenario `image`: the image as built offline, and one container of it on its own.
# Small, non-root, no shell, the declared ports, stop signal and health check; a bad
# setting exits 2; the health check turns healthy; SIGTERM drains (health 503, writes
# 503 DRAINING) and exits 0.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start --no-cluster

max_mb=${HYPERCACHE_IMAGE_MAX_MB:-30}
img=$HYPERCACHE_IMAGE

step "image metadata"
size=$(docker image inspect -f '{{.Size}}' "$img")
((size <= max_mb * 1000 * 1000)) || fail "image is $size bytes, over ${max_mb} MB"
step "size $(image_size "$img")"
[[ $(docker image inspect -f '{{.Config.User}}' "$img") == 10001:10001 ]] || fail "image does not run as uid 10001"
ports=$(docker image inspect -f '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' "$img")
for p in 8080/tcp 8081/tcp 7946/tcp; do
    [[ " $ports" == *" $p "* ]] || fail "port $p not exposed (exposed: $ports)"
done
[[ $(docker image inspect -f '{{.Config.StopSignal}}' "$img") == SIGTERM ]] || fail "stop signal is not SIGTERM"
[[ $(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$img") == *healthcheck* ]] ||
    fail "no health check using 'hypercache-server healthcheck'"
[[ $(docker image inspect -f '{{json .Config.Entrypoint}}' "$img") == '["/usr/local/bin/hypercache-server"]' ]] ||
    fail "entrypoint is not the server"

step "no shell in the image"
if docker run --rm --entrypoint /bin/sh "$img" -c true >/dev/null 2>&1; then
    fail "/bin/sh runs in the image"
fi

step "version subcommand, and a bad setting exits 2 naming the variable"
out=$(timeout 30 docker run --rm "$img" version)
[[ $out == "hypercache-server "* ]] || fail "version printed '$out'"
set +e
out=$(timeout 30 docker run --rm -e HYPERCACHE_REPLICATION=abc "$img" 2>&1)
rc=$?
set -e
[[ $rc == 2 ]] || fail "HYPERCACHE_REPLICATION=abc exited $rc (want 2): $out"
[[ $out == *HYPERCACHE_REPLICATION* ]] || fail "the error does not name the variable: $out"

step "one container: healthy, non-root, serving on a published loopback port"
name="hypercache-image-test-$$"
CLEANUP+=("docker rm -f $name")
docker run -d --name "$name" -p 127.0.0.1::8080 -p 127.0.0.1::8081 \
    -e HYPERCACHE_NODE_ID=solo -e HYPERCACHE_AUTH_TOKEN="$TOKEN" -e HYPERCACHE_DRAIN_LINGER=3s \
    "$img" >/dev/null
print_cluster_logs() { docker logs "$name" >&2 2>&1 || true; }
api=$(docker port "$name" 8080/tcp | head -n1)
admin=$(docker port "$name" 8081/tcp | head -n1)
[[ $api == 127.0.0.1:* && $admin == 127.0.0.1:* ]] || fail "ports not published on loopback ($api, $admin)"
healthy() { [[ $(health_of "$name") == healthy ]]; }
eventually 30 "health check healthy" healthy
uid=$(docker top "$name" -o pid,uid,comm | awk 'NR == 2 { print $2 }' || true)
[[ $uid == 10001 ]] || fail "the server runs as uid '$uid'"
req PUT "http://$api/v1/cache/solo-key" --data-binary 'plain string with spaces'
expect_status 200 "PUT solo-key"
body_has '"stored":true' || fail "PUT did not say stored: $BODY"
req GET "http://$api/v1/cache/solo-key"
expect_status 200 "GET solo-key"
printf 'plain string with spaces' | cmp -s - "$TMP/body" || fail "GET solo-key not byte-exact: $BODY"
curl -s -o /dev/null -w '%{http_code}' -m 5 "http://$api/v1/cache/solo-key" >"$TMP/code" || true
[[ $(cat "$TMP/code") == 401 ]] || fail "GET without the token answered $(cat "$TMP/code"), want 401"

step "SIGTERM: drains, then exits 0"
docker kill -s TERM "$name" >/dev/null
draining() {
    STATUS=$(curl -s -o "$TMP/body" -w '%{http_code}' -m 2 "http://$admin/health" || true)
    BODY=$(cat "$TMP/body")
    [[ $STATUS == 503 ]]
}
eventually 3 "management /health 503 while draining" draining
req PUT "http://$api/v1/cache/solo-key-2" --data-binary x
expect_status 503 "PUT while draining"
body_has '"code":"DRAINING"' || fail "PUT while draining: $BODY"
exited() { [[ $(docker inspect -f '{{.State.Status}}' "$name") == exited ]]; }
eventually 30 "container exited" exited
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
[[ $code == 0 ]] || fail "exit code $code after SIGTERM (want 0)"
docker logs "$name" 2>&1 | grep -q 'stopped cleanly' || fail "no 'stopped cleanly' in the log"
pass
