#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2119,SC2317 # checks are called through `eventually`
# Scenario `replication`: any node accepts any request and routes it. A PUT through
# node 1 and one through node 2 read back byte-exact on all five nodes; a DELETE
# through node 3 makes the key 404 NOT_FOUND on all five while the other key stays.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
scenario_start

eventually 30 "every node sees 5 alive members" all_see_five_alive "${NODES[@]}"

step "PUT hello=world via node 1, greeting='plain string with spaces' via node 2"
put 1 hello world
expect_status 200 "PUT hello on node 1"
body_has '"stored":true' || fail "PUT hello: $BODY"
put 2 greeting 'plain string with spaces'
expect_status 200 "PUT greeting on node 2"
body_has '"stored":true' || fail "PUT greeting: $BODY"
printf 'hello world\ngreeting plain string with spaces\n' >"$TMP/both"
eventually 10 "both values byte-exact on all five nodes" keys_everywhere 1,2,3,4,5 "$TMP/both"

step "DELETE hello via node 3"
del 3 hello
expect_status 200 "DELETE hello on node 3"
body_has '"deleted":true' || fail "DELETE hello: $BODY"
missing_everywhere() {
    local n
    for n in "${NODES[@]}"; do
        get_missing "$n" hello || { LAST_MISSING="hypercache-$n still answers $STATUS"; return 1; }
    done
}
eventually 10 "hello is 404 NOT_FOUND on all five nodes" missing_everywhere
printf 'greeting plain string with spaces\n' >"$TMP/greeting"
rm -f "$TMP"/confirmed-*
keys_everywhere 1,2,3,4,5 "$TMP/greeting" || fail "greeting changed after the DELETE of hello: $LAST_MISSING"
pass
