//! Compiles the protobuf contract in `proto/` with protox, a pure-Rust compiler,
//! so that building needs no `protoc` on the machine. The encoded descriptor set
//! is also written to `OUT_DIR` for gRPC server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/nightjar/storage/v1/storage.proto";
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("nightjar_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
