# kaudit: one image for every role (shim, detect, run, scan).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY integration integration
RUN cargo build --release --locked --bin kaudit

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 kaudit
WORKDIR /kaudit
COPY --from=build /src/target/release/kaudit /usr/local/bin/kaudit
COPY rules rules
COPY pipelines pipelines
USER kaudit
EXPOSE 8765 9464
ENTRYPOINT ["kaudit"]
CMD ["run"]
