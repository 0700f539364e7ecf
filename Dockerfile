# syntax=docker/dockerfile:1
#
# The Eye: a release build, run from a slim Debian image as a non-root user.
#
#   docker build -t the-eye .            (docker-compose.yml builds it as the-eye:local)
#   docker run -e THE_EYE_CLICKHOUSE_URL=http://clickhouse:8123 -p 8000:8000 the-eye
#
# Needs BuildKit (the default builder of Docker 23+ and `docker compose`) for the cache mounts.
# The builder's Debian release (bookworm) matches the runtime image's, so the binary links
# against the same glibc. The toolchain is the one the project is built and tested with.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p the-eye \
 && cp target/release/the-eye /usr/local/bin/the-eye

FROM debian:12-slim
# ca-certificates: for an https:// THE_EYE_CLICKHOUSE_URL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin the-eye \
 && install -d -o the-eye -g the-eye /var/lib/the-eye/spool
COPY --from=build /usr/local/bin/the-eye /usr/local/bin/the-eye
# The spool directory exists and belongs to the-eye, so that a named volume mounted there
# (docker-compose.cluster.yml) starts writable.
# The payload schemas; mount another directory here (and send SIGHUP) to change them.
COPY schemas /etc/the-eye/schemas
USER the-eye:the-eye
ENV THE_EYE_SERVER_LISTEN_ADDR=0.0.0.0:8000 \
    THE_EYE_SERVER_LOG_FORMAT=json \
    THE_EYE_INGEST_SCHEMAS_DIR=/etc/the-eye/schemas \
    THE_EYE_PIPELINE_SPOOL_DIR=/var/lib/the-eye/spool
# The write-ahead spool: accepted events not yet in ClickHouse. Keep it on a volume that
# outlives the container (docker-compose.yml mounts `the-eye-spool` here).
VOLUME /var/lib/the-eye/spool
EXPOSE 8000 9464
# No curl here: `the-eye healthcheck` asks this instance's /readyz (ClickHouse answers and the
# schema is current) and exits 0 on 200.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["the-eye", "healthcheck"]
ENTRYPOINT ["the-eye"]
CMD ["serve"]
