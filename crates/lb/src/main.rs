//! The `lb` command.
//!
//! Run with `cargo run --release -p lb` (demo mode).

fn main() {}
