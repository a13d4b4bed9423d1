//! The `lb` command: parse the flags, set up logging and a runtime, hand over to [`lb::cli`].
//!
//! Run with `cargo run --release -p lb` (demo mode: three toy backends behind the proxy), or
//! `cargo run --release -p lb -- --help` for quick mode and config files.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

// A proxy allocates and frees small buffers (headers, body chunks) on every request, from one thread
// per worker; mimalloc's thread-local free lists make that markedly cheaper than glibc's malloc
// (measured with /work/shared/tools/bench-vs-anchors: see the README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = lb::cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    // The forwarding runs on the proxy's own worker threads; this runtime only carries the control
    // plane (admin API, health checks) and, in demo mode, the toy backends.
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lb: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lb::cli::main(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lb: {e:#}");
            ExitCode::FAILURE
        }
    }
}
