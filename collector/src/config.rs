//! `collector.toml`: listeners, TLS files, the NRPE listener and its command table.
//!
//! Every key is documented in `packaging/etc/collector.toml.sample`. Unknown keys are errors;
//! relative paths resolve against the config file's folder. Everything is validated here,
//! before a socket is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::nrpe::{AllowedHost, split_words};

/// Where the config lives when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/vigie/collector.toml";
/// The admin socket when neither the config nor `--socket` says otherwise.
pub const DEFAULT_ADMIN_SOCKET: &str = "/var/run/vigie/collector.sock";
/// The agent port when the config does not say otherwise.
pub const DEFAULT_AGENTS: &str = "[::]:5668";

/// A bad config file: always names the file, and the line and key when there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The validated collector configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Listen,
    pub tls: Tls,
    /// The NRPE listener; `None` when the file has no `[nrpe]` section.
    pub nrpe: Option<Nrpe>,
    pub checks: Checks,
}

/// How checks judge reports.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// A report older than this is stale (UNKNOWN); default: three times the agent's interval.
    #[serde(default, deserialize_with = "de_duration_opt")]
    pub stale_after: Option<Duration>,
}

/// Whether NRPE clients must present a certificate of the Vigie CA (an operator's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientCerts {
    /// Do not ask (check_nrpe's default).
    #[default]
    None,
    /// Ask; accept clients without one.
    Ask,
    /// Refuse clients without a valid one (`check_nrpe -C cert -K key`).
    Require,
}

/// The NRPE-compatible listener.
#[derive(Clone, Debug)]
pub struct Nrpe {
    /// Listeners where the first argument names the agent: `check_nrpe -c check_load -a auray`.
    pub listen: Vec<SocketAddr>,
    /// One listener per agent, no agent argument needed (drop-in for old tunnel ports).
    pub agents: BTreeMap<String, SocketAddr>,
    pub tls: bool,
    pub client_certs: ClientCerts,
    pub allowed_hosts: Vec<AllowedHost>,
    /// Like nrpe.cfg's dont_blame_nrpe: arguments after the agent fill $ARG1$..$ARG16$.
    pub allow_arguments: bool,
    /// Deadline for the TLS handshake plus the query.
    pub connection_timeout: Duration,
    /// Command name to check command line (`load -w 15,10,5 -c 30,25,20`).
    pub commands: BTreeMap<String, String>,
}

/// The command table used when the config has no `[nrpe.commands]`.
pub const DEFAULT_COMMANDS: &[(&str, &str)] = &[
    ("check_alive", "alive"),
    ("check_disk", "disk -w 20% -c 10%"),
    ("check_load", "load -w 15,10,5 -c 30,25,20"),
    ("check_mem", "mem -w 80% -c 90%"),
    ("check_swap", "swap -w 50% -c 20%"),
    ("check_users", "users -w 5 -c 10"),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NrpeFile {
    listen: Option<Vec<SocketAddr>>,
    #[serde(default)]
    agents: BTreeMap<String, SocketAddr>,
    tls: Option<bool>,
    #[serde(default)]
    client_certs: ClientCerts,
    allowed_hosts: Option<Vec<String>>,
    #[serde(default)]
    allow_arguments: bool,
    #[serde(default, deserialize_with = "de_duration_opt")]
    connection_timeout: Option<Duration>,
    commands: Option<BTreeMap<String, String>>,
}

fn de_duration_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        serde::de::Error::custom(format!("invalid duration {s:?} ({e}); write e.g. 10s, 5m"))
    })
}

impl NrpeFile {
    fn validate(self) -> Result<Nrpe, String> {
        for name in self.agents.keys() {
            vigie_certs::validate_name(name).map_err(|e| format!("nrpe.agents: {e}"))?;
        }
        let allowed_hosts = self
            .allowed_hosts
            .unwrap_or_else(|| vec!["127.0.0.1".into(), "::1".into()])
            .iter()
            .map(|h| h.parse().map_err(|e| format!("nrpe.allowed_hosts: {e}")))
            .collect::<Result<Vec<AllowedHost>, String>>()?;
        let commands = self.commands.unwrap_or_else(|| {
            DEFAULT_COMMANDS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        });
        for (name, line) in &commands {
            let words = split_words(line).map_err(|e| format!("nrpe.commands.{name}: {e}"))?;
            let check = words.first().map(String::as_str).unwrap_or("");
            if !crate::checks::CHECKS.iter().any(|(n, _)| *n == check) {
                return Err(format!(
                    "nrpe.commands.{name}: unknown check {check:?} (checks: alive, load, disk, mem, swap, users)"
                ));
            }
        }
        let connection_timeout = self.connection_timeout.unwrap_or(Duration::from_secs(10));
        if connection_timeout.is_zero() {
            return Err("nrpe.connection_timeout: must be more than 0s".into());
        }
        Ok(Nrpe {
            listen: self
                .listen
                .unwrap_or_else(|| vec![SocketAddr::from(([127, 0, 0, 1], 5666))]),
            agents: self.agents,
            tls: self.tls.unwrap_or(true),
            client_certs: self.client_certs,
            allowed_hosts,
            allow_arguments: self.allow_arguments,
            connection_timeout,
            commands,
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Where agents connect (gRPC over mutual TLS).
    #[serde(default = "default_agents")]
    pub agents: SocketAddr,
    /// The admin API for the CLI and check_vigie.
    #[serde(default = "default_admin_socket")]
    pub admin_socket: PathBuf,
    /// Group given to the admin socket (mode 0660), e.g. "nagios"; default: the process's.
    #[serde(default)]
    pub admin_group: Option<String>,
    /// Optional TCP admin port for remote check_vigie and CLI: operator certificates only.
    #[serde(default)]
    pub admin_tcp: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            agents: default_agents(),
            admin_socket: default_admin_socket(),
            admin_group: None,
            admin_tcp: None,
        }
    }
}

fn default_agents() -> SocketAddr {
    DEFAULT_AGENTS
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], 5668)))
}

fn default_admin_socket() -> PathBuf {
    PathBuf::from(DEFAULT_ADMIN_SOCKET)
}

/// The collector's TLS files, from `vigie-collector ca init`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Revoked certificates (`vigie-collector ca revoke` writes it next to the CA). Re-read
    /// whenever it changes; a missing file means nothing is revoked.
    #[serde(default)]
    pub crl: Option<PathBuf>,
}

impl Tls {
    /// The CRL file: the configured one, else `crl.pem` next to the CA certificate.
    pub fn crl_path(&self) -> PathBuf {
        self.crl
            .clone()
            .unwrap_or_else(|| self.ca.parent().unwrap_or(Path::new(".")).join("crl.pem"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    listen: Listen,
    tls: Tls,
    nrpe: Option<NrpeFile>,
    #[serde(default)]
    checks: Checks,
}

/// Turns a toml error into `path:line:column: message` on one line.
fn parse_error(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let (line, column) = err.span().map_or((1, 1), |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    });
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message: err.message().trim().replace('\n', " "),
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    /// Parses config text as if read from `path` (relative paths resolve against its folder).
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| parse_error(path, text, &e))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let nrpe = file
            .nrpe
            .map(NrpeFile::validate)
            .transpose()
            .map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        Ok(Config {
            nrpe,
            checks: file.checks,
            listen: Listen {
                admin_socket: resolve(file.listen.admin_socket.clone()),
                ..file.listen
            },
            tls: Tls {
                ca: resolve(file.tls.ca),
                cert: resolve(file.tls.cert),
                key: resolve(file.tls.key),
                crl: file.tls.crl.map(resolve),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[listen]
agents = "127.0.0.1:5668"
[tls]
ca = "ca/ca.pem"
cert = "ca/collector.pem"
key = "/etc/vigie/ca/collector.key"
"#;

    #[test]
    fn good_config_and_defaults() {
        let c = Config::from_toml(Path::new("/etc/vigie/collector.toml"), GOOD).expect("ok");
        assert_eq!(c.listen.agents, "127.0.0.1:5668".parse().expect("addr"));
        assert_eq!(c.listen.admin_socket, Path::new(DEFAULT_ADMIN_SOCKET));
        assert_eq!(c.tls.ca, Path::new("/etc/vigie/ca/ca.pem"));
        assert_eq!(c.tls.crl_path(), Path::new("/etc/vigie/ca/crl.pem"));
    }

    #[test]
    fn nrpe_section() {
        let p = Path::new("collector.toml");
        let c = Config::from_toml(p, &format!("{GOOD}[nrpe]\n")).expect("ok");
        let n = c.nrpe.expect("nrpe");
        assert_eq!(n.listen, ["127.0.0.1:5666".parse().expect("addr")]);
        assert!(n.tls && !n.allow_arguments);
        assert_eq!(n.commands["check_load"], "load -w 15,10,5 -c 30,25,20");
        assert!(Config::from_toml(p, GOOD).expect("ok").nrpe.is_none());

        let text = format!(
            "{GOOD}[nrpe]\nallowed_hosts = [\"10.0.0.0/8\"]\nclient_certs = \"require\"\n\
             [nrpe.agents]\nauray = \"127.0.0.1:6001\"\n[nrpe.commands]\ncheck_x = \"disk -w 5% -c 2% -p '/mnt/my disk'\"\n"
        );
        let n = Config::from_toml(p, &text).expect("ok").nrpe.expect("nrpe");
        assert_eq!(n.client_certs, ClientCerts::Require);
        assert_eq!(n.agents["auray"].port(), 6001);
        assert_eq!(n.commands.len(), 1, "a command table replaces the defaults");

        let bad = format!("{GOOD}[nrpe.commands]\ncheck_x = \"frobnicate -w 1\"\n");
        let e = Config::from_toml(p, &bad).expect_err("unknown check");
        assert_eq!(
            e.to_string(),
            "collector.toml: nrpe.commands.check_x: unknown check \"frobnicate\" (checks: alive, load, disk, mem, swap, users)"
        );
        let bad = format!("{GOOD}[nrpe]\nallowed_hosts = [\"10.0.0.0/33\"]\n");
        assert!(
            Config::from_toml(p, &bad)
                .expect_err("cidr")
                .to_string()
                .contains("nrpe.allowed_hosts")
        );
        let bad = format!("{GOOD}[nrpe.agents]\n\"Bad Name\" = \"127.0.0.1:6001\"\n");
        assert!(
            Config::from_toml(p, &bad)
                .expect_err("name")
                .to_string()
                .contains("nrpe.agents: invalid name")
        );
    }

    #[test]
    fn errors_are_one_line_with_position() {
        let p = Path::new("collector.toml");
        let e = Config::from_toml(p, &GOOD.replace("agents =", "agentz =")).expect_err("key");
        let m = e.to_string();
        assert!(
            m.starts_with("collector.toml:3:1: unknown field `agentz`"),
            "{m}"
        );
        assert!(!m.contains('\n'));
        let e = Config::from_toml(p, &GOOD.replace("127.0.0.1:5668", "nowhere")).expect_err("addr");
        assert!(e.to_string().starts_with("collector.toml:3:10:"), "{e}");
        let e = Config::from_toml(p, "[listen]\n").expect_err("no tls");
        assert!(e.to_string().contains("missing field `tls`"), "{e}");
    }
}
