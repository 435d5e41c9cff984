# syntax=docker/dockerfile:1
# tailgate's container image: the proxy and its standard plugins on a small runtime image.
#
#   docker build -t tailgate .                       (from the repository root)
#   docker run -p 4317:4317 -p 4318:4318 -p 8888:8888 \
#       -e TAILGATE_EXPORTER_ENDPOINT=http://jaeger:4317 tailgate
#
# The image runs the seed policy (examples/tailgate.yaml: keep errors, keep traces slower than 1 s, keep
# 10 % of the rest, redact PII) from the plugins built into the binary (`builtin:NAME`; `tailgate plugin
# list` names them):
#   /opt/tailgate/examples/tailgate.yaml      the policy (mount your own over it, or pass --config)
#   /opt/tailgate/plugins/                    in plugins.search_path of your own config, for your plugins
# Flags and TAILGATE_* variables override the file (README: Command line); the admin server listens on
# 0.0.0.0:8888 here so /healthz and /metrics are reachable from outside the container.

# --- build: tailgate (release), its build script building the standard plugins (wasm32-wasip2) ---------
FROM rust:1.95-bookworm AS build
WORKDIR /src
# rustup installs the toolchain and the wasm32-wasip2 target named in rust-toolchain.toml (`rustup
# toolchain install` without arguments reads it since rustup 1.28; older rustups install on `rustup show`).
COPY rust-toolchain.toml ./
RUN rustup toolchain install 2>/dev/null || rustup show
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/plugins/target \
    --mount=type=cache,target=/src/target \
    mkdir -p /out \
    && cargo build --release --locked -p tailgate --bin tailgate \
    && cp target/release/tailgate /out/tailgate

# --- runtime: glibc, CA certificates, nothing else; runs as an unprivileged user ------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tailgate /usr/local/bin/tailgate
COPY examples/tailgate.yaml /opt/tailgate/examples/tailgate.yaml
WORKDIR /opt/tailgate
ENV TAILGATE_ADMIN_ENDPOINT=0.0.0.0:8888 \
    XDG_CACHE_HOME=/tmp/cache
# OTLP/gRPC, OTLP/HTTP, admin (/healthz, /metrics, /reload)
EXPOSE 4317 4318 8888
ENTRYPOINT ["/usr/local/bin/tailgate"]
CMD ["--config", "/opt/tailgate/examples/tailgate.yaml"]
