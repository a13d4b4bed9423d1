//! The four balancers the lab runs, and the facts about each that the rest of the crate needs: where
//! its configs live, which program runs them, and the ports of the lab arrangement.
//!
//! | balancer | configs                | program   | traffic | stats / admin |
//! |----------|------------------------|-----------|---------|---------------|
//! | lb       | `crates/lb/config/*.toml` | `lb`   | 8080    | 9900          |
//! | nginx    | `nginx/*.conf`         | `nginx`   | 8081    | (none)        |
//! | haproxy  | `haproxy/*.cfg`        | `haproxy` | 8082    | 8404          |
//! | envoy    | `envoy/*.yaml`         | `envoy`   | 8083    | 9901          |
//!
//! The toy backends are on 9001-9003 in every arrangement (`backend-1..3` in Docker).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Ports of the toy backends in the lab arrangement: backend-N listens on `9000 + N`.
pub const BACKEND_PORTS: [u16; 3] = [9001, 9002, 9003];

/// One of the balancers the lab can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Balancer {
    /// This workspace's proxy (`crates/lb`).
    Lb,
    /// nginx open source.
    Nginx,
    /// HAProxy.
    Haproxy,
    /// Envoy.
    Envoy,
}

impl Balancer {
    /// Every balancer, in the order of their ports.
    pub const ALL: [Balancer; 4] = [Balancer::Lb, Balancer::Nginx, Balancer::Haproxy, Balancer::Envoy];

    /// The name used on the command line and in Docker (`lb`, `nginx`, `haproxy`, `envoy`).
    pub fn name(self) -> &'static str {
        match self {
            Balancer::Lb => "lb",
            Balancer::Nginx => "nginx",
            Balancer::Haproxy => "haproxy",
            Balancer::Envoy => "envoy",
        }
    }

    /// The program that runs it.
    pub fn program(self) -> &'static str {
        self.name()
    }

    /// Folder of its committed configs, relative to the repository root.
    pub fn config_dir(self) -> &'static str {
        match self {
            Balancer::Lb => "crates/lb/config",
            Balancer::Nginx => "nginx",
            Balancer::Haproxy => "haproxy",
            Balancer::Envoy => "envoy",
        }
    }

    /// File extension of its configs.
    pub fn extension(self) -> &'static str {
        match self {
            Balancer::Lb => "toml",
            Balancer::Nginx => "conf",
            Balancer::Haproxy => "cfg",
            Balancer::Envoy => "yaml",
        }
    }

    /// The config `lab up` uses when none is named: round robin, or lb's lab arrangement.
    pub fn default_config(self) -> &'static str {
        match self {
            Balancer::Lb => "lab.toml",
            Balancer::Nginx => "round-robin.conf",
            Balancer::Haproxy => "round-robin.cfg",
            Balancer::Envoy => "round-robin.yaml",
        }
    }

    /// Port that takes traffic in the lab arrangement.
    pub fn listen_port(self) -> u16 {
        match self {
            Balancer::Lb => 8080,
            Balancer::Nginx => 8081,
            Balancer::Haproxy => 8082,
            Balancer::Envoy => 8083,
        }
    }

    /// Port of the stats page or admin interface, if it has one.
    pub fn admin_port(self) -> Option<u16> {
        match self {
            Balancer::Lb => Some(9900),
            Balancer::Nginx => None,
            Balancer::Haproxy => Some(8404),
            Balancer::Envoy => Some(9901),
        }
    }

    /// Path of the stats page on the admin port (`/` for HAProxy, `/stats` for Envoy).
    pub fn stats_path(self) -> &'static str {
        match self {
            Balancer::Lb => "/metrics",
            Balancer::Nginx => "",
            Balancer::Haproxy => "/",
            Balancer::Envoy => "/clusters",
        }
    }

    /// Where a config named `name` lives under the repository `root`.
    pub fn config_path(self, root: &Path, name: &str) -> PathBuf {
        root.join(self.config_dir()).join(name)
    }

    /// Every committed config of this balancer under `root`, sorted by name.
    pub fn configs(self, root: &Path) -> std::io::Result<Vec<PathBuf>> {
        let dir = root.join(self.config_dir());
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == self.extension()))
            .collect();
        files.sort();
        Ok(files)
    }
}

impl fmt::Display for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A balancer name that is not one of `lb`, `nginx`, `haproxy`, `envoy`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown balancer {0:?}: expected lb, nginx, haproxy or envoy")]
pub struct UnknownBalancer(pub String);

impl FromStr for Balancer {
    type Err = UnknownBalancer;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Balancer::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| UnknownBalancer(s.to_string()))
    }
}
