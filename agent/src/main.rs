//! `vigie-agent`: parse the command line, load the config, start logging, run the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vigie_agent::{Config, config, metrics};

/// Exit code for a bad command line or config (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

/// Vigie agent: reports this router's health to the Vigie collector over mutual TLS.
///
/// The agent listens on nothing: it dials out to the collectors of its config, keeps one
/// connection open and reconnects on its own. Logs go to stderr (RUST_LOG=debug for more).
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run in the foreground until SIGTERM or SIGINT (the rc script wraps it with daemon(8)).
    Run {
        /// Config file.
        #[arg(long, short = 'c', value_name = "PATH", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Check the config and its certificate files; one line per problem, exit 64 on any.
    CheckConfig {
        /// Config file.
        #[arg(long, short = 'c', value_name = "PATH", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Print one report of this machine and exit (for debugging; needs no config).
    Sample {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    logging();
    match cli.command {
        Command::Sample { json } => sample(json),
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => check_config(&config),
    }
}

fn sample(json: bool) -> ExitCode {
    let info = metrics::SystemInfo::read();
    let report = metrics::sample(0);
    let text = if json {
        let value = serde_json::json!({ "hello": info.hello(0), "report": report });
        match serde_json::to_string_pretty(&value) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("vigie-agent: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        vigie_agent::metrics::render(&info, &report)
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    ExitCode::SUCCESS
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let found = vigie_agent::preflight::check(path);
    for p in &found.problems {
        eprintln!("vigie-agent: {p}");
    }
    if found.problems.is_empty() {
        for n in &found.notes {
            println!("{n}");
        }
        println!("{}: OK", path.display());
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_USAGE)
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let loaded = Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            let tls =
                vigie_certs::TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)
                    .and_then(|m| vigie_certs::tls::agent_link_client(&m))
                    .with_context(|| format!("{}: [tls]", path.display()))?;
            Ok((config, tls))
        });
    let (config, tls) = match loaded {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vigie-agent: {e:#}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // One thread for the network; sampling and captures run on blocking threads, kept
    // between reports rather than started anew every interval.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(3600))
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigie-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(vigie_agent::run(config, tls, shutdown_signal()));
    ExitCode::SUCCESS
}

/// Logs to stderr, filtered by RUST_LOG ("debug", "warn,vigie_agent=debug"; default "info").
/// `Targets` rather than `EnvFilter`: the same directives without a regex engine (600 KB of
/// the stripped binary).
fn logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let default = || Targets::new().with_default(tracing::Level::INFO);
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) => v.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("vigie-agent: RUST_LOG={v:?} ignored ({e}); logging at info");
            default()
        }),
        Err(_) => default(),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
