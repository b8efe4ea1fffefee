//! Generates the protobuf and gRPC code from proto/ at build time, with a
//! vendored protoc so that a fresh machine needs no system protoc, and the
//! canonical proto3 JSON (serde) impls with pbjson.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/casebridge/v1/labels.proto",
    "proto/casebridge/v1/record.proto",
    "proto/casebridge/v1/envelope.proto",
    "proto/casebridge/v1/directory.proto",
    "proto/casebridge/v1/audit.proto",
    "proto/casebridge/v1/exchange.proto",
    "proto/casebridge/v1/agency.proto",
    "proto/casebridge/v1/auditor.proto",
];

/// The echo `casebridge bench` measures against; not part of any API.
const BENCH_PROTO: &str = "proto/casebridge/v1/bench.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("casebridge_descriptor.bin");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;

    // The messages, for the protocol core: prost only, no gRPC runtime.
    let messages = out_dir.join("messages");
    std::fs::create_dir_all(&messages)?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    config.file_descriptor_set_path(&descriptor_path);
    config.out_dir(&messages);
    config.compile_protos(PROTOS, &["proto"])?;

    // The gRPC services, for the daemons and tools: they refer to the
    // messages above instead of generating them again.
    let services = out_dir.join("services");
    std::fs::create_dir_all(&services)?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    config.extern_path(".casebridge.v1", "crate::protocol::proto::v1");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .out_dir(&services)
        .compile_with_config(config, PROTOS, &["proto"])?;

    // The bench's echo, for `tools::bench` alone: messages and service in
    // one file, kept out of the descriptor set above so that no daemon
    // lists it in reflection.
    let bench = out_dir.join("bench");
    std::fs::create_dir_all(&bench)?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .out_dir(&bench)
        .compile_with_config(config, &[BENCH_PROTO], &["proto"])?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .out_dir(&messages)
        .build(&[".casebridge.v1"])?;

    for proto in PROTOS.iter().chain([&BENCH_PROTO]) {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
