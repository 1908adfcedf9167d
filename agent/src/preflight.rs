//! `vigie-agent check-config`: everything that would stop the agent, found before it runs.
//!
//! The rc script runs it before starting the service, so a router with a bad config or
//! certificate says why in one line per problem instead of looping on failed connections.
//! Checked: the config itself, then each TLS file (present, readable, the key private),
//! that the certificate chains to the CA, is valid now and is an agent certificate, and
//! that the key belongs to the certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use vigie_certs::identity::{RoleKind, identity};
use vigie_certs::{TlsMaterial, files};

use crate::config::Config;

/// Warn when the certificate expires within this long.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// What `check-config` found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Each stops the agent.
    pub problems: Vec<String>,
    /// Worth knowing; does not stop it.
    pub notes: Vec<String>,
}

/// Checks the config at `path` and the files it names.
pub fn check(path: &Path) -> Findings {
    let mut f = Findings::default();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            f.problems.push(format!("{:#}", anyhow::Error::from(e)));
            return f;
        }
    };
    let ca = files::load_certs(&config.tls.ca);
    let chain = files::load_certs(&config.tls.cert);
    let key = files::load_key(&config.tls.key);
    for r in [ca.as_ref().err(), chain.as_ref().err(), key.as_ref().err()]
        .into_iter()
        .flatten()
    {
        f.problems.push(vigie_proto::channel::one_line(
            r.to_string(),
            std::error::Error::source(r),
        ));
    }
    let (Ok(ca), Ok(chain), Ok(key)) = (ca, chain, key) else {
        return f;
    };
    let cert_path = config.tls.cert.display();
    let leaf = &chain[0];
    match identity(leaf.as_ref()) {
        Ok(id) if id.role == RoleKind::Agent => {
            f.notes.push(format!(
                "identity: agent {:?} (serial {})",
                id.name, id.serial
            ));
        }
        Ok(id) => f.problems.push(format!(
            "{cert_path}: this is the {} certificate of {:?}, not an agent certificate",
            id.role, id.name
        )),
        Err(e) => f.problems.push(format!("{cert_path}: {e}")),
    }
    if let Err(e) = verify_chain(&ca, &chain, SystemTime::now()) {
        f.problems.push(format!(
            "{cert_path}: not valid with the CA of {}: {e}",
            config.tls.ca.display()
        ));
    } else if verify_chain(&ca, &chain, SystemTime::now() + EXPIRY_WARNING).is_err() {
        f.notes.push(format!(
            "{cert_path}: expires within 30 days; issue a new one (vigie-collector ca issue)"
        ));
    }
    let material = TlsMaterial { ca, chain, key };
    if let Err(e) = vigie_certs::tls::agent_link_client(&material) {
        f.problems.push(format!(
            "{}: does not go with {cert_path}: {e}",
            config.tls.key.display()
        ));
    }
    for c in &config.collectors {
        f.notes.push(format!("collector: {c}"));
    }
    f
}

/// Verifies the certificate chain as the collector will, at `when`.
fn verify_chain(
    ca: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    when: SystemTime,
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c.clone()).map_err(|e| e.to_string())?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), vigie_certs::tls::provider())
            .build()
            .map_err(|e| e.to_string())?;
    let now = UnixTime::since_unix_epoch(
        when.duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|e| e.to_string())?,
    );
    verifier
        .verify_client_cert(&chain[0], &chain[1..], now)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
