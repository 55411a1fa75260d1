//! The `nightjar-bench` executable; everything lives in the library.

#[tokio::main]
async fn main() {
    let code = nightjar_bench::cli::main().await;
    std::process::exit(code);
}
