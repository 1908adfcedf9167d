//! `check_vigie`, the Nagios plugin: asks the collector's admin API to run one check.
//!
//! Output and exit code are exactly those of the NRPE door for the same check (one engine,
//! two doors). Anything that keeps the plugin from getting an answer — bad options, an
//! absent or silent collector, unreadable certificates — is UNKNOWN (3) with one line that
//! says what, as the Monitoring Plugins guidelines ask.

use std::path::PathBuf;
use std::time::Duration;

use vigie_proto::CheckRequest;
use vigie_proto::admin_client::AdminClient;
use vigie_proto::channel::HostPort;

use crate::config::DEFAULT_ADMIN_SOCKET;

/// The usage line.
pub const USAGE: &str = "check_vigie [-S SOCKET | -H HOST:PORT --cert FILE --key FILE --ca FILE] -a AGENT CHECK [check options] [-t SECONDS]";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the collector is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Socket(PathBuf),
    Remote {
        addr: HostPort,
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Socket(p) => write!(f, "{}", p.display()),
            Target::Remote { addr, .. } => write!(f, "{addr}"),
        }
    }
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub target: Target,
    pub agent: String,
    /// The check and its options.
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Args),
    Help,
    Version,
}

/// Parses the plugin's arguments (without the program name). Options before CHECK are the
/// plugin's; everything after CHECK goes to the check, except `-t SECONDS`.
pub fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut socket = None;
    let mut host = None;
    let (mut cert, mut key, mut ca) = (None, None, None);
    let mut agent = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut argv: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (arg, None),
        };
        let is_timeout = matches!(name, "-t" | "--timeout");
        if !argv.is_empty() && !is_timeout {
            argv.push(arg.to_owned());
            continue;
        }
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            let v = args
                .get(i)
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))?;
            i += 1;
            Ok(v)
        };
        match name {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "-S" | "--socket" => socket = Some(PathBuf::from(value()?)),
            "-H" | "--host" => {
                host = Some(HostPort::parse(&value()?).map_err(|e| format!("-H: {e}"))?)
            }
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--key" => key = Some(PathBuf::from(value()?)),
            "--ca" => ca = Some(PathBuf::from(value()?)),
            "-a" | "--agent" => agent = Some(value()?),
            "-t" | "--timeout" => {
                let v = value()?;
                timeout = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("-t {v:?}: give seconds, e.g. 10"))?;
            }
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg:?}")),
            _ => argv.push(arg.to_owned()),
        }
    }
    let agent = agent.ok_or("-a AGENT is required")?;
    if argv.is_empty() {
        return Err("no check given (alive, load, disk, mem, swap, users)".into());
    }
    let target = match (socket, host) {
        (Some(_), Some(_)) => return Err("-S and -H exclude each other".into()),
        (Some(s), None) => Target::Socket(s),
        (None, None) => Target::Socket(PathBuf::from(DEFAULT_ADMIN_SOCKET)),
        (None, Some(addr)) => match (cert, key, ca) {
            (Some(cert), Some(key), Some(ca)) => Target::Remote {
                addr,
                cert,
                key,
                ca,
            },
            _ => return Err("-H needs --cert, --key and --ca (an operator certificate)".into()),
        },
    };
    Ok(Parsed::Run(Args {
        target,
        agent,
        argv,
        timeout,
    }))
}

/// `--help`, as the plugin guidelines lay it out.
pub fn help() -> String {
    let checks: String = crate::checks::CHECKS
        .iter()
        .map(|(_, usage)| format!("  {usage}\n"))
        .collect();
    format!(
        "check_vigie {version}
Nagios plugin for Vigie: judges the latest report an agent sent to the Vigie collector.
Output, perfdata and exit codes are those of the same check through check_nrpe.

Usage:
  {USAGE}

Options:
 -h, --help
    Print this help and exit.
 -V, --version
    Print the version and exit.
 -S, --socket=PATH
    The collector's admin socket (default {DEFAULT_ADMIN_SOCKET}).
 -H, --host=HOST:PORT
    Ask a collector's remote admin port (listen.admin_tcp) instead, over mutual TLS with:
 --cert=FILE, --key=FILE
    an operator certificate and its key (vigie-collector ca issue --operator NAME), and
 --ca=FILE
    the Vigie CA certificate (ca.pem).
 -a, --agent=NAME
    The agent to check (the name in its certificate).
 -t, --timeout=SECONDS
    Give up after this long and return UNKNOWN (default {timeout}).

Checks and their options (thresholds use the Monitoring Plugins range syntax):
{checks}
An unknown agent, a disconnected one or a stale report is UNKNOWN; `alive` is CRITICAL
when the agent is disconnected or its report is stale.

Examples:
  check_vigie -a auray load -w 15,10,5 -c 30,25,20
  check_vigie -a auray disk -w 20% -c 10% -p / -p /var
  check_vigie -S /run/vigie/collector.sock -a auray alive
  check_vigie -H vigie.example.net:5669 --cert nagios.pem --key nagios.key --ca ca.pem -a auray users -w 5 -c 10
",
        version = env!("CARGO_PKG_VERSION"),
        timeout = DEFAULT_TIMEOUT.as_secs(),
    )
}

/// Runs the check; returns the exit code and the output line(s).
pub async fn run(args: &Args) -> (i32, String) {
    let unknown = |why: String| (3, format!("VIGIE UNKNOWN - {why}"));
    let target = &args.target;
    let asked = async {
        let channel = match target {
            Target::Socket(path) => vigie_proto::channel::dial_unix(path).await,
            Target::Remote {
                addr,
                cert,
                key,
                ca,
            } => {
                let tls = vigie_certs::TlsMaterial::load(ca, cert, key)
                    .and_then(|m| vigie_certs::tls::agent_link_client(&m))
                    .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
                vigie_proto::channel::dial_tls(addr, tls).await
            }
        }
        .map_err(|e| format!("cannot reach the collector at {target}: {e}"))?;
        AdminClient::new(channel)
            .check(CheckRequest {
                agent: args.agent.clone(),
                argv: args.argv.clone(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| {
                format!(
                    "the collector at {target} refused: {}",
                    vigie_proto::channel::status_text(&s)
                )
            })
    };
    match tokio::time::timeout(args.timeout, asked).await {
        Ok(Ok(r)) => (r.state.clamp(0, 3), r.output),
        Ok(Err(why)) => unknown(why),
        Err(_) => unknown(format!(
            "the collector at {target} did not answer within {}s",
            args.timeout.as_secs_f64()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Parsed, String> {
        parse(
            &line
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn options_before_the_check_are_ours_after_it_the_checks() {
        let Ok(Parsed::Run(a)) = p("-a auray load -w 15,10,5 -c 30,25,20 -t 3") else {
            panic!("parses");
        };
        assert_eq!(a.agent, "auray");
        assert_eq!(a.argv, ["load", "-w", "15,10,5", "-c", "30,25,20"]);
        assert_eq!(a.timeout, Duration::from_secs(3));
        assert_eq!(
            a.target,
            Target::Socket(PathBuf::from(DEFAULT_ADMIN_SOCKET))
        );
        let Ok(Parsed::Run(a)) = p("-H [::1]:5669 --cert a.pem --key=a.key --ca ca.pem -a x alive")
        else {
            panic!("parses");
        };
        assert_eq!(a.target.to_string(), "[::1]:5669");
        assert_eq!(p("-V"), Ok(Parsed::Version));
        assert_eq!(
            p("-a x load --help"),
            Ok(Parsed::Run(Args {
                target: Target::Socket(PathBuf::from(DEFAULT_ADMIN_SOCKET)),
                agent: "x".into(),
                argv: vec!["load".into(), "--help".into()],
                timeout: DEFAULT_TIMEOUT,
            })),
            "after CHECK, options belong to the check"
        );
    }

    #[test]
    fn bad_command_lines() {
        assert_eq!(p("load -w 1 -c 2"), Err("-a AGENT is required".into()));
        assert!(p("-a x").expect_err("no check").contains("no check given"));
        assert!(
            p("-a x -S s -H h:1 load")
                .expect_err("both")
                .contains("exclude")
        );
        assert!(
            p("-a x -H h:1 load")
                .expect_err("no cert")
                .contains("--cert")
        );
        assert!(
            p("-a x -t soon load")
                .expect_err("t")
                .contains("-t \"soon\"")
        );
        assert!(p("-z").expect_err("z").contains("unknown option \"-z\""));
        assert!(p("-a").expect_err("value").contains("-a needs a value"));
    }
}
