//! `collector.toml`: listeners and TLS files.
//!
//! Every key is documented in `packaging/etc/collector.toml.sample`. Unknown keys are errors;
//! relative paths resolve against the config file's folder. Everything is validated here,
//! before a socket is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
}

/// The validated collector configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Listen,
    pub tls: Tls,
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
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            agents: default_agents(),
            admin_socket: default_admin_socket(),
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
        Ok(Config {
            listen: Listen {
                agents: file.listen.agents,
                admin_socket: resolve(file.listen.admin_socket),
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
