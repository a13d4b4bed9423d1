//! The `lb` command: parse the flags, set up logging and a runtime, hand over to [`lb::cli`].
//!
//! Run with `cargo run --release -p lb` (demo mode: three toy backends behind the proxy), or
//! `cargo run --release -p lb -- --help` for quick mode and config files.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

// A proxy allocates and frees many small, short-lived buffers (header maps, request ids, body chunks)
// on every request, each on its worker's own thread: the case mimalloc's per-thread free lists are
// built for, where glibc's malloc pays for arenas and consolidation (`malloc_consolidate`,
// `_int_free` were among the top user-space symbols in a `perf` profile under `wrk`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = lb::cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: piped into a file or a test, escape codes are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
