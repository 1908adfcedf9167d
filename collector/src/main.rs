//! `vigie-collector`: the daemon (`serve`) and the operator CLI (`ca`, `agents`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use vigie_certs::Role;
use vigie_collector::{Config, Listeners, cli, config};

/// Exit code for a bad command line or config (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

/// Vigie collector: keeps the latest report of every agent and answers Nagios and operators.
///
/// `serve` runs the daemon. The other commands are the operator's: a private CA for agents
/// and operators, the fleet's state, and captures. Logs go to stderr (RUST_LOG=debug for more).
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector in the foreground until SIGTERM or SIGINT.
    Serve {
        /// Config file.
        #[arg(long, short = 'c', value_name = "PATH", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Manage the private CA that signs every agent, operator and collector certificate.
    #[command(subcommand)]
    Ca(CaCommand),
    /// List the agents the collector knows: state, last report age, address, figures.
    Agents {
        /// The collector's admin socket.
        #[arg(long, short = 'S', value_name = "PATH", default_value = config::DEFAULT_ADMIN_SOCKET)]
        socket: PathBuf,
        /// Print JSON (with the full last report of each agent) instead of a table.
        #[arg(long)]
        json: bool,
        /// Show the interfaces AGENT can capture on instead.
        #[arg(long, value_name = "AGENT", conflicts_with = "json")]
        interfaces: Option<String>,
    },
    /// Capture packets on an agent's interface and write them as pcap (for Wireshark).
    ///
    /// The agent applies its own limits (allowed interfaces, maximum duration, bytes and
    /// snaplen) and never captures its own connection to the collector.
    ///
    /// Examples:
    ///   vigie-collector capture auray -i igb0 -f 'udp port 53' -d 1m -w dns.pcap
    ///   vigie-collector capture auray -i ovpnc1 -w - | wireshark -k -i -
    #[command(verbatim_doc_comment)]
    Capture(cli::capture::Request),
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a CA in DIR (ca.pem, ca.key) and the collector's certificate (collector.pem,
    /// collector.key). Refuses a folder that already holds a CA.
    Init {
        /// Folder for the CA; created if missing.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// DNS name or IP address agents dial to reach the collector (repeat for several).
        #[arg(long = "server-name", value_name = "NAME", required = true, num_args = 1..)]
        server_names: Vec<String>,
    },
    /// Issue an agent or operator certificate into OUT: ca.pem, NAME.pem, NAME.key.
    Issue {
        /// The CA folder (from `ca init`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        who: Who,
        /// Folder for the three files; created if missing.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Revoke every certificate issued to NAME. A running collector refuses it within
    /// seconds and closes its session; no restart needed.
    Revoke {
        /// The CA folder (from `ca init`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Agent or operator name.
        name: String,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Who {
    /// An agent certificate; NAME (1-63 of a-z 0-9 . _ -) becomes the agent's identity.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// An operator certificate, for check_vigie or the CLI on another machine.
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let printed = match cli.command {
        Command::Serve { config } => return serve(&config),
        Command::Ca(CaCommand::Init { dir, server_names }) => cli::ca_init(&dir, &server_names)
            .map_err(|e| (usage_or_runtime(&e), anyhow::Error::from(e))),
        Command::Ca(CaCommand::Issue { dir, who, out }) => {
            let role = match (who.agent, who.operator) {
                (Some(name), _) => Role::Agent(name),
                (None, Some(name)) => Role::Operator(name),
                (None, None) => unreachable!("clap requires one of --agent, --operator"),
            };
            cli::ca_issue(&dir, &role, &out)
                .map_err(|e| (usage_or_runtime(&e), anyhow::Error::from(e)))
        }
        Command::Ca(CaCommand::Revoke { dir, name }) => {
            cli::ca_revoke(&dir, &name).map_err(|e| (usage_or_runtime(&e), anyhow::Error::from(e)))
        }
        Command::Agents {
            socket,
            json,
            interfaces,
        } => runtime()
            .and_then(|rt| {
                rt.block_on(async {
                    match interfaces {
                        Some(agent) => cli::interfaces(&socket, &agent).await,
                        None => cli::agents(&socket, json).await,
                    }
                })
            })
            .map_err(|e| (1, e)),
        Command::Capture(req) => {
            return match runtime().and_then(|rt| rt.block_on(cli::capture::run(req))) {
                Ok((code, summary)) => {
                    eprintln!("{summary}");
                    ExitCode::from(code)
                }
                Err(e) => {
                    eprintln!("vigie-collector: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match printed {
        Ok(text) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
            ExitCode::SUCCESS
        }
        Err((code, e)) => {
            eprintln!("vigie-collector: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Bad names and refused overwrites are the user's to fix (64); the rest is runtime (1).
fn usage_or_runtime(e: &vigie_certs::Error) -> u8 {
    use vigie_certs::Error as E;
    match e {
        E::BadName { .. }
        | E::BadServerName { .. }
        | E::Exists { .. }
        | E::NotIssued { .. }
        | E::KeyTooOpen { .. } => EX_USAGE,
        E::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => EX_USAGE,
        _ => 1,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(path: &std::path::Path) -> ExitCode {
    let prepared = Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            let tls = vigie_collector::load_tls(&config).map_err(|e| {
                anyhow::Error::from(e).context(format!("{}: [tls]", path.display()))
            })?;
            Ok((config, tls))
        });
    let (config, tls) = match prepared {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vigie-collector: {e:#}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match vigie_collector::raise_fd_limit() {
        // Every agent holds one descriptor; so does every NRPE query in flight.
        Ok(n) => tracing::info!("open files limit {n}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let listeners = Listeners::bind(&config).await?;
            vigie_collector::serve(&config, tls, listeners, vigie_collector::shutdown_signal())
                .await
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigie-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
