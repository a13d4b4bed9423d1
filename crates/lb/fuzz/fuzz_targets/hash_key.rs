//! Fuzz `lb_algorithms::HashKey`: parse a key spec, then extract and hash it from an arbitrary request.
//!
//! Run with `cargo +nightly fuzz run --fuzz-dir crates/lb/fuzz hash_key /tmp/lb-fuzz/hash_key crates/lb/fuzz/corpus/hash_key -- -max_total_time=60`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::hash_key(data));
