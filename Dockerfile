# hypercache-server container image.
#
# Two ways to fill the same runtime stage:
#
#   From source (the default; needs a registry for rust:1-bookworm):
#       docker build -t hypercache-server:dev .
#       docker compose -f compose/docker-compose.yml up --build
#     The `build` stage compiles the release binary and scripts/container-rootfs turns it
#     into a minimal root filesystem (binary, the glibc libraries it links, passwd with a
#     non-root user, /tmp); the final `release` stage copies that onto `runtime`.
#
#   Offline (no registry; what scripts/cluster-up does):
#     the host builds the binary, runs scripts/container-rootfs itself, imports the
#     result with `docker import` as a local base image, and builds only `runtime` on it:
#       docker build --target runtime --build-arg RUNTIME_BASE=<imported image> ...
#     `runtime` is the first stage and needs nothing but its base, so even the legacy
#     builder (which builds every stage up to --target) never reaches rust:1-bookworm.
#
# Either way the image holds no shell and no package manager: about 10 MB.

# Base of the runtime stage: empty for the from-source build, the imported root
# filesystem for the offline build.
ARG RUNTIME_BASE=scratch

# ---- runtime: everything about how the image runs, shared by both builds ----
FROM ${RUNTIME_BASE} AS runtime
LABEL org.opencontainers.image.title="hypercache-server" \
      org.opencontainers.image.description="Distributed in-memory cache node" \
      org.opencontainers.image.licenses="MIT"
# Client API, management, peers (dist).
EXPOSE 8080 8081 7946
# uid/gid of `hypercache` in the passwd written by scripts/container-rootfs.
USER 10001:10001
# SIGTERM drains the node (writes refused, data handed over) and exits 0; the
# orchestrator's stop timeout must be longer than HYPERCACHE_DRAIN_LINGER plus
# HYPERCACHE_SHUTDOWN_GRACE.
STOPSIGNAL SIGTERM
# No shell in the image: the binary probes its own /healthz on loopback.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/hypercache-server", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/hypercache-server"]

# ---- build: the release binary and its root filesystem, from source ----
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin hypercache-server \
 && scripts/container-rootfs target/release/hypercache-server /rootfs

# ---- release (default target): runtime + the root filesystem built from source ----
FROM runtime AS release
COPY --from=build /rootfs/ /
