//! Compiles the protobuf contract in `proto/` with protox, a pure-Rust compiler,
//! so that building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/nightjar/storage/v1/storage.proto";
    println!("cargo:rerun-if-changed=proto");

    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
