//! `agent.toml`: where to report, how often, with which certificate, and the capture policy.
//!
//! Every key is documented in `packaging/etc/agent.toml.sample`. Unknown keys are errors;
//! relative paths resolve against the config file's folder. Everything is validated here,
//! before the agent dials anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the config lives when `--config` is not given.
pub const DEFAULT_PATH: &str = "/usr/local/etc/vigie/agent.toml";

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

/// One entry of `collectors`: a host (DNS name or IP address) and a port.
pub use vigie_proto::channel::HostPort as CollectorAddr;

/// The agent's TLS files, resolved to absolute paths.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Limits the agent enforces on every capture, whatever the collector asks.
#[derive(Clone, Debug)]
pub struct CapturePolicy {
    /// Interfaces that may be captured; empty means all.
    pub interfaces: Vec<String>,
    pub max_duration: Duration,
    pub max_bytes: u64,
    pub max_snaplen: u32,
    pub max_concurrent: u32,
}

impl Default for CapturePolicy {
    fn default() -> Self {
        CapturePolicy {
            interfaces: Vec::new(),
            max_duration: Duration::from_secs(300),
            max_bytes: 100_000_000,
            max_snaplen: 262_144,
            max_concurrent: 1,
        }
    }
}

/// The validated agent configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub collectors: Vec<CollectorAddr>,
    pub interval: Duration,
    pub tls: TlsPaths,
    pub capture: CapturePolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    collectors: Vec<String>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    interval: Option<Duration>,
    tls: TlsFile,
    #[serde(default)]
    capture: CaptureFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CaptureFile {
    #[serde(default)]
    interfaces: Vec<String>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    max_duration: Option<Duration>,
    #[serde(default, deserialize_with = "de_size_opt")]
    max_bytes: Option<u64>,
    max_snaplen: Option<u32>,
    max_concurrent: Option<u32>,
}

fn de_duration_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write e.g. 10s, 5m, 1h"
        ))
    })
}

fn de_size_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    parse_size(&s).map(Some).map_err(serde::de::Error::custom)
}

pub use vigie_proto::units::parse_size;

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
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        if file.collectors.is_empty() {
            return Err(invalid(
                "`collectors` is empty: list at least one host:port".into(),
            ));
        }
        let collectors = file
            .collectors
            .iter()
            .map(|c| CollectorAddr::parse(c).map_err(|m| invalid(format!("collectors: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let interval = file.interval.unwrap_or(Duration::from_secs(10));
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&interval) {
            return Err(invalid(format!(
                "interval: {} is out of range (1s to 1h)",
                humantime::format_duration(interval)
            )));
        }
        let defaults = CapturePolicy::default();
        let capture = CapturePolicy {
            interfaces: file.capture.interfaces,
            max_duration: file.capture.max_duration.unwrap_or(defaults.max_duration),
            max_bytes: file.capture.max_bytes.unwrap_or(defaults.max_bytes),
            max_snaplen: file.capture.max_snaplen.unwrap_or(defaults.max_snaplen),
            max_concurrent: file
                .capture
                .max_concurrent
                .unwrap_or(defaults.max_concurrent),
        };
        if !(64..=262_144).contains(&capture.max_snaplen) {
            return Err(invalid(
                "capture.max_snaplen: must be between 64 and 262144".into(),
            ));
        }
        Ok(Config {
            collectors,
            interval,
            tls: TlsPaths {
                ca: resolve(file.tls.ca),
                cert: resolve(file.tls.cert),
                key: resolve(file.tls.key),
            },
            capture,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
collectors = ["10.8.0.1:5668", "[fd00::1]:5668", "collector.example.net:5668"]
interval = "5s"
[tls]
ca = "ca.pem"
cert = "/etc/vigie/auray.pem"
key = "auray.key"
[capture]
interfaces = ["igb0"]
max_bytes = "10MB"
"#;

    #[test]
    fn good_config() {
        let c = Config::from_toml(Path::new("/usr/local/etc/vigie/agent.toml"), GOOD).expect("ok");
        assert_eq!(c.collectors[1].host, "fd00::1");
        assert_eq!(c.collectors[1].to_string(), "[fd00::1]:5668");
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.tls.ca, Path::new("/usr/local/etc/vigie/ca.pem"));
        assert_eq!(c.tls.cert, Path::new("/etc/vigie/auray.pem"));
        assert_eq!(c.capture.max_bytes, 10_000_000);
        assert_eq!(c.capture.max_duration, Duration::from_secs(300));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let p = Path::new("agent.toml");
        let e = Config::from_toml(p, &GOOD.replace("interval", "intervall")).expect_err("unknown");
        let m = e.to_string();
        assert!(
            m.starts_with("agent.toml:3:1: unknown field `intervall`"),
            "{m}"
        );
        assert!(!m.contains('\n'), "{m}");

        let e = Config::from_toml(p, &GOOD.replace("\"5s\"", "\"5 parsecs\"")).expect_err("dur");
        assert!(
            e.to_string().contains("invalid duration \"5 parsecs\""),
            "{e}"
        );

        let e = Config::from_toml(p, &GOOD.replace("10.8.0.1:5668", "10.8.0.1")).expect_err("port");
        assert!(e.to_string().contains("has no port"), "{e}");
    }
}
