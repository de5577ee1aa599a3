# shellcheck shell=bash
# Shared by scripts/cluster-up, scripts/cluster-down and tests/containers/*: how to reach
# the Docker engine and Compose, build the image without a registry, and wait for the
# 5-node cluster of compose/docker-compose.yml. Source it; it defines functions only
# (plus a few read-only settings) and changes no shell options.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPOSE_FILE="$REPO_ROOT/compose/docker-compose.yml"
# The image the compose file runs (it reads the same variable).
export HYPERCACHE_IMAGE=${HYPERCACHE_IMAGE:-hypercache-server:dev}
# Base image imported from the host-built root filesystem (offline build only).
ROOTFS_IMAGE=${HYPERCACHE_ROOTFS_IMAGE:-hypercache-server-rootfs:local}
# Service names, node ids, published ports and token: the compose file's.
# shellcheck disable=SC2034 # used by the scripts that source this file
NODES=(1 2 3 4 5)
# shellcheck disable=SC2034
TOKEN=dev-token

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Seconds since the epoch, with milliseconds.
now() { date +%s.%3N; }
# Elapsed seconds since $1 (from `now`), one decimal.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# True when a Docker engine answers (within 10 s).
docker_available() {
    command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1
}

# Sets COMPOSE to the Compose command this machine has: `docker compose` (v2) or
# `docker-compose` (v1, >= 1.27 reads the Compose Specification).
detect_compose() {
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    else
        die "neither 'docker compose' nor 'docker-compose' is installed"
    fi
}

# Runs Compose on the cluster's file. The project name is Compose's default (the
# file's directory, `compose`) unless COMPOSE_PROJECT_NAME is set, so the commands in
# docs/containers.md act on a cluster these scripts started, and the other way round.
compose() {
    [[ -n ${COMPOSE+x} ]] || detect_compose
    "${COMPOSE[@]}" -f "$COMPOSE_FILE" "$@"
}

# Prints "service container-id" for every container of the project, running or not.
service_containers() {
    local ids
    ids=$(compose ps -a -q 2>/dev/null || true)
    [[ -n $ids ]] || return 0
    # shellcheck disable=SC2086 # one id per word
    docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}}' $ids 2>/dev/null || true
}

# Container id of service hypercache-$1 (running or stopped), empty if none.
container_of() {
    service_containers | awk -v s="hypercache-$1" '$1 == s { print $2; exit }'
}

# Health of a container: healthy, unhealthy, starting, or its state when it has no
# health check or is not running (exited, restarting, ...).
health_of() {
    docker inspect -f '{{if and .State.Running .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null || echo missing
}

# Waits until every service in "$@" (node numbers) has a healthy container, or fails
# after $HYPERCACHE_UP_TIMEOUT seconds (default 90).
wait_healthy() {
    local limit=${HYPERCACHE_UP_TIMEOUT:-90} deadline n svc id state pending
    local -A ids=()
    deadline=$((SECONDS + limit))
    while :; do
        # Container ids are looked up (slowly, through Compose) until all are known.
        if ((${#ids[@]} < $#)); then
            while read -r svc id; do
                ids[$svc]=$id
            done < <(service_containers)
        fi
        pending=()
        for n in "$@"; do
            id=${ids[hypercache-$n]:-}
            state=$([[ -n $id ]] && health_of "$id" || echo missing)
            [[ $state == healthy ]] || pending+=("hypercache-$n:$state")
        done
        ((${#pending[@]} == 0)) && return 0
        if ((SECONDS >= deadline)); then
            log "not healthy after ${limit}s: ${pending[*]}"
            return 1
        fi
        sleep 0.25
    done
}

# Prints the cluster's state and the last lines of every node's log.
print_cluster_logs() {
    {
        echo "----- compose ps -----"
        compose ps -a 2>/dev/null || compose ps || true
        echo "----- container logs (last ${HYPERCACHE_LOG_LINES:-200} lines each) -----"
        compose logs --no-color --tail="${HYPERCACHE_LOG_LINES:-200}" 2>&1 || true
    } >&2
}

# Builds $HYPERCACHE_IMAGE without a registry: the host's release binary, made into a
# root filesystem by scripts/container-rootfs, imported as $ROOTFS_IMAGE, and the
# Dockerfile's shared `runtime` stage built on it. HYPERCACHE_BINARY names a binary to
# use instead of running cargo. Runs in a subshell (its temporary directory goes with it).
build_image_offline() (
    set -euo pipefail
    started=$(now)
    if [[ -n ${HYPERCACHE_BINARY:-} ]]; then
        bin=$HYPERCACHE_BINARY
    else
        log "cargo build --release --bin hypercache-server (may wait for another build's lock)"
        (cd "$REPO_ROOT" && cargo build --release --locked --bin hypercache-server) >&2
        bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/hypercache-server"
    fi
    [[ -x $bin ]] || die "no server binary at $bin"
    work=$(mktemp -d "${TMPDIR:-/tmp}/hypercache-image.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    "$REPO_ROOT/scripts/container-rootfs" "$bin" "$work/rootfs"
    tar --numeric-owner -C "$work/rootfs" -cf - . |
        docker import --change 'LABEL org.hypercache.rootfs=host-binary' - "$ROOTFS_IMAGE" >/dev/null
    # The classic builder builds every stage up to --target; `runtime` is the first
    # one, so nothing is pulled. BuildKit (when the buildx plugin exists) builds only
    # what the target needs anyway.
    builder=()
    docker buildx version >/dev/null 2>&1 || builder=(env DOCKER_BUILDKIT=0)
    # The Dockerfile alone, no context: the runtime stage copies nothing from it.
    if ! "${builder[@]}" docker build --target runtime --build-arg "RUNTIME_BASE=$ROOTFS_IMAGE" \
        -t "$HYPERCACHE_IMAGE" - <"$REPO_ROOT/Dockerfile" >"$work/build.log" 2>&1; then
        cat "$work/build.log" >&2
        die "docker build of the runtime stage failed"
    fi
    # Images replaced by this build (untagged now) are of no use.
    docker image prune -f --filter label=org.hypercache.rootfs=host-binary >/dev/null || true
    log "image $HYPERCACHE_IMAGE built offline in $(since "$started")s ($(image_size "$HYPERCACHE_IMAGE"))"
)

# Human-readable size of an image.
image_size() {
    docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f MB", $1 / 1000000 }'
}
