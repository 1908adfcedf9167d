//! rustls configurations for the agent link: TLS 1.3 only, both sides authenticated by
//! certificates of the Vigie CA, ALPN `h2` (gRPC). The ring provider is passed explicitly so
//! no process-wide default has to be installed.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::files;
use crate::{Error, Result};

/// A CA bundle plus our own certificate chain and key, loaded from files.
#[derive(Debug)]
pub struct TlsMaterial {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsMaterial {
    /// Loads the three files; a key that group or others can read is refused.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        Ok(TlsMaterial {
            ca: files::load_certs(ca)?,
            chain: files::load_certs(cert)?,
            key: files::load_key(key)?,
        })
    }

    /// From PEM text (tests, and certificates issued in memory).
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Self> {
        use rustls::pki_types::pem::PemObject;
        let pem_err = |source| Error::Pem {
            path: "<memory>".into(),
            source,
        };
        Ok(TlsMaterial {
            ca: CertificateDer::pem_slice_iter(ca.as_bytes())
                .collect::<std::result::Result<_, _>>()
                .map_err(pem_err)?,
            chain: CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<std::result::Result<_, _>>()
                .map_err(pem_err)?,
            key: PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(pem_err)?,
        })
    }

    fn roots(&self) -> Result<Arc<RootCertStore>> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone())?;
        }
        Ok(Arc::new(roots))
    }
}

/// The crypto provider every Vigie TLS config uses.
///
/// ring's defaults, with the SHA-256 suites first: SHA-256 has instructions of its own on
/// current x86 and ARMv8 CPUs and SHA-384 does not, and a TLS 1.3 handshake hashes its
/// transcript and key schedule dozens of times (measured: SHA-512 compression was 10 % of the
/// collector's CPU under NRPE load with AES-256-GCM-SHA384).
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            && s.suite() != rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    });
    Arc::new(provider)
}

/// Server side of the agent link: TLS 1.3, a client certificate of the CA is required, and
/// certificates listed in `crls` are refused.
pub fn agent_link_server(
    m: &TlsMaterial,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let mut verifier = WebPkiClientVerifier::builder_with_provider(m.roots()?, provider.clone());
    if !crls.is_empty() {
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.build()?)
        .with_single_cert(m.chain.clone(), m.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Client side of the agent link (agents, and operators on the remote admin port): TLS 1.3,
/// only the CA is trusted, our certificate is presented.
pub fn agent_link_client(m: &TlsMaterial) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(m.roots()?)
        .with_client_auth_cert(m.chain.clone(), m.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Whether a server asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Ask, and verify one if presented.
    Optional,
    Required,
}

/// Server side of the NRPE listener: what the stock check_nrpe can speak (TLS 1.2 and 1.3,
/// no SNI needed), optionally with client certificates of the CA.
pub fn nrpe_server(
    m: &TlsMaterial,
    client_auth: ClientAuth,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let mut v = WebPkiClientVerifier::builder_with_provider(m.roots()?, provider);
            if !crls.is_empty() {
                v = v.with_crls(crls).only_check_end_entity_revocation();
            }
            if client_auth == ClientAuth::Optional {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(v.build()?)
        }
    };
    // The TLS 1.3 session tickets stay on although check_nrpe never resumes: they are what
    // the server sends right after the client's Finished, so the client's next segment (the
    // query, held back by Nagle's algorithm) is acknowledged at once. Without them every
    // check waited ~40 ms for a delayed ACK (measured: 7 ms per check with, 51 ms without).
    // One ticket is enough for that.
    let mut config = builder.with_single_cert(m.chain.clone(), m.key.clone_key())?;
    config.send_tls13_tickets = 1;
    // check_nrpe (OpenSSL) lists AES-256-GCM-SHA384 first: choose by our order instead.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}
