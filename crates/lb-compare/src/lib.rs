//! `lb-compare`: experiments that compare load-balancing algorithms, from textbook models to scenarios
//! that drive the real balancers of `lb-algorithms` in simulated time.
//!
//! Every experiment is a library function that returns a serialisable report, so the command line, the
//! tests that reproduce the literature and the lessons all call the same code. Every random choice takes a
//! seed: a number printed in a lesson can be reproduced from the command that printed it.
//!
//! # Layout
//!
//! One module per experiment, each with its spec, its `run`, its report and the `text` that prints it:
//!
//! - [`sequence`]: the first N picks of an algorithm, as letters (`lb-compare sequence`).
//! - [`balls`]: balls into bins with `d` choices, Azar et al. 1994 (`lb-compare balls`).
//! - [`supermarket`]: Mitzenmacher's supermarket model and its fixed point (`lb-compare supermarket`).
//! - [`stale`]: several balancers, each with its own view, and stale load information: Mitzenmacher's
//!   herd (`lb-compare stale`).
//! - [`hashing`]: balance and disruption of the consistent-hashing algorithms (`lb-compare hashing`).
//! - [`scenario`]: the TOML scenario format (fleet, load, script of failures); files in `scenarios/`.
//! - [`sim`]: the discrete-event simulator that runs a scenario through every algorithm
//!   (`lb-compare scenario`).
//! - [`live`]: a scenario run for real: toy backends, the real `lb`, load from `loadgen`
//!   (`lb-compare live`).
//! - [`balancers`]: the per-core benchmark of `lb`, nginx, HAProxy and Envoy against a direct
//!   connection (`lb-compare balancers`).
//! - [`report`]: a standard set of experiments written out as Markdown with SVG charts
//!   (`lb-compare report`).
//!
//! And, private to the crate:
//!
//! - `rng.rs`: the simulator's seeded distributions, on `lb-algorithms`'s wyrand.
//! - `load_tools.rs`: `wrk` and `h2load` for `balancers --protocol https|h2|h2c`, read into
//!   `loadgen`'s summary.
//! - `idle.rs`: the idle client connections (plain, TLS, HTTP/1.1 or HTTP/2) of `balancers`' memory
//!   figure.
//! - `output.rs`: the plain-text tables every experiment prints.
//! - `charts.rs`: the report's SVG charts.
//! - `main.rs`: the `lb-compare` command: reads the arguments, runs an experiment, prints its `text` or
//!   its JSON, with a progress bar on long runs.

pub mod balancers;
pub mod balls;
mod charts;
pub mod hashing;
mod idle;
pub mod live;
mod load_tools;
mod output;
pub mod report;
mod rng;
pub mod scenario;
pub mod sequence;
pub mod sim;
pub mod stale;
pub mod supermarket;
