# sluice-server for CPU: the server with ONNX Runtime from the onnxruntime wheel
# beside it (where sluice-server looks first), on a distroless, non-root base.
# Build from the repository root: docker build -f images/server.Dockerfile .
ARG ONNXRUNTIME_VERSION=1.31.1

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p sluice-server --bin sluice-server
ARG ONNXRUNTIME_VERSION
RUN pip3 download --break-system-packages --no-deps --only-binary=:all: \
        "onnxruntime==${ONNXRUNTIME_VERSION}" -d /tmp/wheel \
    && python3 -m zipfile -e /tmp/wheel/onnxruntime-*.whl /tmp/ort \
    && cp /tmp/ort/onnxruntime/capi/libonnxruntime.so.* /src/target/release/libonnxruntime.so

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sluice-server /opt/sluice/sluice-server
COPY --from=build /src/target/release/libonnxruntime.so /opt/sluice/libonnxruntime.so
ENV PATH=/opt/sluice:$PATH
USER 65532:65532
EXPOSE 8080 8081
# The operator passes `serve ...` or `fetch ...` as arguments.
ENTRYPOINT ["/opt/sluice/sluice-server"]
