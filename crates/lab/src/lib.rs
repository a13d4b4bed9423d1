//! The lab: the same three toy backends behind nginx, HAProxy, Envoy or our `lb`, each run from the
//! committed config of one strategy, natively (`lab up`) or checked (`lab check`,
//! `lab validate-compose`).
//!
//! The committed files in `nginx/`, `haproxy/`, `envoy/` and `crates/lb/config/` are the single
//! source of truth, written for Docker (`backend-1:9001`, ...). A native run renders a copy with
//! only the backend addresses and ports changed (see [`render`](crate::render())) into a scratch
//! folder and runs the real program on it.
//!
//! # Layout
//!
//! - `balancer.rs`: [`Balancer`]: each balancer's folder, program and lab ports.
//! - `render.rs`: [`render`](crate::render()) and [`Ports`]: the committed config, made runnable here.
//! - `run.rs`: [`Prepared`] and [`Running`]: the rendered copy, and the child process running it.
//! - `programs.rs`: finding nginx, haproxy, envoy and lb; the install hint.
//! - `check.rs`: `lab check`, every config validated by its program.
//! - `compose.rs`: `lab validate-compose`, docker-compose.yml against the configs.
//! - `up.rs`: `lab up`.
//! - `traffic.rs`: requests through a balancer, counted by the backend that answered.
//! - `testing.rs`: the [`testing::Lab`] fixture the integration tests use.
//! - `repo.rs`, `tempdir.rs`: the repository root; a scratch folder (from the `tempfile` crate).

pub mod balancer;
pub mod check;
pub mod compose;
pub mod programs;
pub mod render;
pub mod repo;
pub mod run;
pub mod tempdir;
pub mod testing;
pub mod traffic;
pub mod up;

pub use balancer::Balancer;
pub use render::{Ports, RenderError, render};
pub use run::{Output, Prepared, Running};
