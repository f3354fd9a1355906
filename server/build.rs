//! Generates the gRPC service from `proto/grpc_predict_v2.proto`, and the ONNX
//! model format's messages from `proto/onnx.proto` (for `sluice-server
//! optimize`), with a pure-Rust protobuf compiler, so that building needs no
//! `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/grpc_predict_v2.proto", "proto/onnx.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
