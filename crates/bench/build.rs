//! Compiles the client side of Nightjar's protobuf contract (`proto/` at the
//! repository root) with protox, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../../proto";
    let proto = "../../proto/nightjar/storage/v1/storage.proto";
    println!("cargo:rerun-if-changed={root}");

    let descriptors = protox::compile([proto], [root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
