//! `lab`: run the toy backends behind nginx, HAProxy, Envoy or lb, and check the configs.
//!
//! Run with
//!
//! ```sh
//! cargo run -p lab -- up nginx                         # round robin on http://127.0.0.1:8081/
//! cargo run -p lab -- up haproxy --config least-conn.cfg
//! cargo run -p lab -- up envoy --config maglev.yaml --base-port 19001   # every port + 10000
//! cargo run -p lab -- check                            # every committed config, validated
//! cargo run -p lab -- validate-compose                 # docker-compose.yml against the configs
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lab::Balancer;
use lab::check::{Status, check_all, table};
use lab::programs;
use lab::up::{UpOptions, up};

#[derive(Debug, Parser)]
#[command(version, about = "Run the toy backends behind nginx, HAProxy, Envoy or lb; check their configs")]
struct Args {
    /// Repository root (default: found from the current folder upwards).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start backend-1..3 and one balancer on a committed config, until Ctrl-C.
    Up {
        /// lb, nginx, haproxy or envoy.
        balancer: Balancer,
        /// A config file in the balancer's folder, e.g. least-conn.conf (default: round robin).
        #[arg(long)]
        config: Option<String>,
        /// Port of backend-1; every other port moves by the same offset.
        #[arg(long, default_value_t = 9001)]
        base_port: u16,
    },
    /// Validate every committed config with the real program; exit 1 if any fails.
    Check,
    /// Check docker-compose.yml against the configs and the lab's ports; exit 1 on any error.
    ValidateCompose,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let root = match args.root {
        Some(root) => root,
        None => {
            let cwd = std::env::current_dir()?;
            lab::repo::find_root(&cwd).context("not inside the balance-lab repository (use --root)")?
        }
    };
    match args.command {
        Cmd::Up { balancer, config, base_port } => {
            up(&root, &UpOptions { balancer, config, base_port }).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check => {
            let rows = check_all(&root).await?;
            print!("{}", table(&rows, &root));
            let failed = rows.iter().filter(|r| matches!(r.status, Status::Failed(_))).count();
            let missing = rows.iter().filter(|r| matches!(r.status, Status::Missing(_))).count();
            let ok = rows.len() - failed - missing;
            println!("{ok} ok, {failed} failed, {missing} skipped");
            let missing_fails = missing > 0 && programs::external_required();
            if missing > 0 {
                println!("skipped configs need a program: {}", programs::INSTALL_HINT);
            }
            Ok(if failed > 0 || missing_fails { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Cmd::ValidateCompose => {
            let report = lab::compose::validate_file(&root);
            for note in &report.notes {
                println!("note: {note}");
            }
            for error in &report.errors {
                println!("error: {error}");
            }
            if report.ok() {
                println!("docker-compose.yml: consistent with the configs and the lab's ports");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("docker-compose.yml: {} error(s)", report.errors.len());
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
