# sluice-operator: static-ish Rust binary on a distroless, non-root base.
# Build from the repository root: docker build -f images/operator.Dockerfile .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p sluice-operator --bin sluice-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sluice-operator /usr/local/bin/sluice-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sluice-operator"]
