//! Compiles `proto/vigie/v1/*.proto` with protox (pure Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = protox::compile(["vigie/v1/vigie.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // `vigie-agent sample --json` and `vigie-collector agents --json` print these as is.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_fds(files)?;
    // protox and compile_fds emit no rerun-if-changed lines of their own.
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
