//! `vigie-bench`: load generators for the collector, driven by `bench/scale.py`.
//!
//! - `swarm`: N agents in one process, each with its own certificate, each a real mutual
//!   TLS gRPC session reporting every interval, reconnecting with the agent's own backoff.
//! - `probe`: sequential agent sessions (dial, Hello, Welcome), timed.
//! - `nrpe-load`: a concurrent NRPE v4 client, TLS or plain, timed per check.
//! - `hostile`: connections that open a port and then send nothing, or a byte a second.
//!
//! Every command prints JSON lines on stdout, for the driver to read.

mod hostile;
mod nrpe_load;
mod swarm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vigie_proto::channel::HostPort;

/// Vigie load generators (benchmarks only; never point them at a production collector).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run N agents against a collector until SIGTERM, SIGINT or --duration; a JSON line
    /// every --every with the number connected, sessions opened, reports sent.
    Swarm(swarm::Args),
    /// Open COUNT agent sessions one after the other and print their latency.
    Probe(swarm::ProbeArgs),
    /// Send NRPE v4 queries from C concurrent clients for S seconds, for each C.
    NrpeLoad(nrpe_load::Args),
    /// Open N connections that send nothing (or a byte a second) and report when the server
    /// closes them.
    Hostile(hostile::Args),
}

/// Where the agents' certificates come from.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// The collector's agent port.
    #[arg(long, value_name = "HOST:PORT", value_parser = HostPort::parse)]
    collector: HostPort,
    /// The CA folder (from `vigie-collector ca init`): agents' certificates are issued from it.
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let fds = vigie_collector::raise_fd_limit().unwrap_or(1024);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigie-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Swarm(a) => swarm::run(a, fds).await,
            Command::Probe(a) => swarm::probe(a).await,
            Command::NrpeLoad(a) => nrpe_load::run(a).await,
            Command::Hostile(a) => hostile::run(a).await,
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigie-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Milliseconds since the Unix epoch (the driver lines up events with it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Latency summary of a set of samples, in milliseconds.
pub fn summary(samples: &mut [Duration]) -> serde_json::Value {
    samples.sort_unstable();
    let at = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    serde_json::json!({
        "n": samples.len(),
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": samples.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    })
}
