# sluice-server for CUDA: ONNX Runtime from the onnxruntime-gpu wheel on NVIDIA's
# CUDA + cuDNN runtime image; InferenceServices with `device: cuda` use it.
# Build from the repository root: docker build -f images/server-cuda.Dockerfile .
ARG ONNXRUNTIME_VERSION=1.31.1
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p sluice-server --bin sluice-server
ARG ONNXRUNTIME_VERSION
RUN pip3 download --break-system-packages --no-deps --only-binary=:all: \
        "onnxruntime-gpu==${ONNXRUNTIME_VERSION}" -d /tmp/wheel \
    && python3 -m zipfile -e /tmp/wheel/onnxruntime_gpu-*.whl /tmp/ort \
    && mkdir -p /opt/sluice \
    && cp /tmp/ort/onnxruntime/capi/libonnxruntime.so.* /opt/sluice/libonnxruntime.so \
    && cp /tmp/ort/onnxruntime/capi/libonnxruntime_providers_*.so /opt/sluice/

FROM ${CUDA_IMAGE}
COPY --from=build /src/target/release/sluice-server /opt/sluice/sluice-server
COPY --from=build /opt/sluice/ /opt/sluice/
ENV PATH=/opt/sluice:$PATH \
    ORT_DYLIB_PATH=/opt/sluice/libonnxruntime.so \
    LD_LIBRARY_PATH=/opt/sluice:$LD_LIBRARY_PATH
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/opt/sluice/sluice-server"]
