# Builds the lab's Rust binaries (toy-backend and lb) and ships them in a small image.
# Used by docker-compose.yml for the backend-N and lb services:
#   docker compose build            # or: docker build -t balance-lab:dev .

# Build stage: the workspace's toolchain (rust-version in Cargo.toml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache the registry and target folder between builds (BuildKit); copy the two binaries out of the
# cache mount, which does not persist into the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p toy-backend -p lb \
    && mkdir -p /out \
    && cp target/release/toy-backend target/release/lb /out/

# Run stage: the same Debian release as the build stage, so glibc matches.
FROM debian:bookworm-slim
COPY --from=build /out/toy-backend /out/lb /usr/local/bin/
# Not root: nothing here needs it (all ports are above 1024).
USER nobody
EXPOSE 9001 9002 9003 8080 9900
CMD ["toy-backend", "--count", "3", "--base-port", "9001", "--host", "0.0.0.0"]
