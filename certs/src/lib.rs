//! Vigie's private certificate authority and everything TLS that rides on it.
//!
//! # Layout
//! - [`ca`]: the CA itself (made with rcgen, ECDSA P-256): create, reload, issue collector,
//!   agent and operator certificates, revoke them into a CRL.
//! - [`files`]: reading PEM files and writing key material atomically with mode 0600; a key
//!   that group or others can read is refused.
//! - [`identity`]: who a peer certificate names (role and name, from the subject).
//! - [`tls`]: the rustls server and client configurations (TLS 1.3, mutual) for the agent link.
//!
//! Only this crate writes key or certificate files.

pub mod ca;
pub mod files;
pub mod identity;
pub mod tls;

use std::path::PathBuf;

pub use ca::{Ca, CaFiles, IssuedFiles, Role, Validity};
pub use identity::{Identity, validate_name};
pub use tls::TlsMaterial;

/// Everything that can go wrong with certificates, keys and their files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: refusing to overwrite an existing file")]
    Exists { path: PathBuf },
    #[error(
        "{path}: private key is readable by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found")]
    NoKey { path: PathBuf },
    #[error("{path}: invalid PEM")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path}: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error(
        "invalid name {name:?}: use 1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    )]
    BadName { name: String },
    #[error("invalid server name {name:?}: give a DNS name or an IP address")]
    BadServerName { name: String },
    #[error("no certificate was ever issued to {name:?} by this CA")]
    NotIssued { name: String },
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    #[error("tls configuration")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
