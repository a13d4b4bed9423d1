//! Speed of the supermarket simulation: simulated requests per second on one core.
//!
//! Run with `cargo bench -p lb-compare`. A plain program, not criterion: the figure that matters is
//! requests per second over a long run, printed once per configuration (see CONTRIBUTING.md: benchmarks
//! print figures, they do not pass or fail).

use std::time::Instant;

use lb_compare::supermarket::{SupermarketSpec, run};

fn main() {
    for (servers, lambda, choices) in [(500, 0.9, 1), (500, 0.9, 2), (500, 0.99, 2), (500, 0.9, 3)] {
        let spec = SupermarketSpec { servers, lambda, choices, arrivals: 20_000_000, warmup: 0.1, seed: 1 };
        let started = Instant::now();
        let report = run(&spec, |_| {});
        let wall = started.elapsed().as_secs_f64();
        println!(
            "supermarket n={servers} lambda={lambda} d={choices}: {:.1} million simulated requests/s \
             (mean time in system {:.3}, theory {:.3})",
            spec.arrivals as f64 / wall / 1e6,
            report.mean_sojourn,
            report.theory_mean_sojourn
        );
    }
}
