# syntax=docker/dockerfile:1
# The previewd image: a release build of the `previewd` binary on a minimal, non-root runtime.
#
#   docker build -t previewd:dev .
#
# Runtime: distroless cc (glibc, libgcc, CA certificates; no shell, no package manager),
# user 65532 (nonroot). The template sets ship in /app/templates, which is also the
# default of PREVIEWD_TEMPLATES_DIR here; the Helm chart's `templates` replace only
# /app/templates/environments, so the pull request texts (github/) stay these.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest to resolve the lock file, and
# sqlx embeds migrations/ at compile time. .dockerignore keeps target/ and node_modules out.
COPY . .
# Cache mounts keep the registry and build artefacts between builds; the binary is copied out
# of the cached target folder, which is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p previewd \
    && install -D -m 0755 target/release/previewd /out/previewd

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/previewd /usr/local/bin/previewd
COPY templates /app/templates
WORKDIR /app
USER 65532:65532
ENV PREVIEWD_LISTEN=0.0.0.0:8080 \
    PREVIEWD_TEMPLATES_DIR=/app/templates \
    PREVIEWD_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/previewd"]
CMD ["serve"]
