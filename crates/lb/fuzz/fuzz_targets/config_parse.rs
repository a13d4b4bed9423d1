//! Fuzz `lb::Config::parse`: any text must give a config or errors that carry a line and column.
//!
//! Run with `cargo +nightly fuzz run --fuzz-dir crates/lb/fuzz config_parse /tmp/lb-fuzz/config_parse crates/lb/fuzz/corpus/config_parse -- -max_total_time=60`

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::config_parse(data));
