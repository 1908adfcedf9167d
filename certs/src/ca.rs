//! The Vigie CA: one ECDSA P-256 key that signs every certificate of a deployment.
//!
//! [`Ca`] is the CA in memory (what tests use). [`CaFiles`] is a CA folder on disk, as
//! `vigie-collector ca init/issue/revoke` manage it:
//!
//! ```text
//! DIR/ca.pem  DIR/ca.key            the CA (the key is never overwritten)
//! DIR/collector.pem  collector.key  the collector's server certificate
//! DIR/index.txt                     every certificate issued: serial, role, name, dates
//! DIR/crl.pem                       revoked serials, signed by the CA (read by the collector)
//! ```

use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::files::{self, CERT_MODE, KEY_MODE, Overwrite};
use crate::identity::{RoleKind, identity, validate_name};
use crate::{Error, Result};

const DAY: Duration = Duration::from_secs(86_400);
/// Leaf certificates live five years: a router certificate that expires is an outage.
const LEAF_LIFETIME: Duration = Duration::from_secs(5 * 366 * 86_400);
const CA_LIFETIME: Duration = Duration::from_secs(20 * 366 * 86_400);

/// What a certificate is for.
#[derive(Clone, Debug)]
pub enum Role {
    /// The collector's server certificate, valid for these DNS names and IP addresses.
    Collector(Vec<String>),
    /// An agent; the name becomes its identity.
    Agent(String),
    /// An operator (remote CLI or check_vigie).
    Operator(String),
}

impl Role {
    pub fn kind(&self) -> RoleKind {
        match self {
            Role::Collector(_) => RoleKind::Collector,
            Role::Agent(_) => RoleKind::Agent,
            Role::Operator(_) => RoleKind::Operator,
        }
    }

    /// The certificate's common name.
    pub fn name(&self) -> &str {
        match self {
            Role::Collector(names) => names.first().map(String::as_str).unwrap_or("collector"),
            Role::Agent(n) | Role::Operator(n) => n,
        }
    }
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clock skew between sites) for `lifetime`.
    pub fn starting_now(lifetime: Duration) -> Self {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + lifetime,
        }
    }

    pub fn leaf_default() -> Self {
        Self::starting_now(LEAF_LIFETIME)
    }
}

/// A freshly issued certificate and its key, as PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// Serial number, lowercase hex.
    pub serial: String,
}

/// The CA in memory.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Vigie");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Ca {
    /// Makes a new CA with a unique name ("Vigie CA 3f9a…").
    pub fn generate() -> Result<Ca> {
        Self::generate_with(Validity::starting_now(CA_LIFETIME))
    }

    pub fn generate_with(validity: Validity) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let public = key.public_key_raw();
        let fingerprint: String =
            public[public.len().saturating_sub(6)..]
                .iter()
                .fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                });
        let mut params = ca_params(&format!("Vigie CA {fingerprint}"));
        params.not_before = OffsetDateTime::from(validity.not_before);
        params.not_after = OffsetDateTime::from(validity.not_after);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Rebuilds a CA from its certificate and key PEM.
    pub fn from_pem(cert_path: &Path, cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let bad = |reason: &str| Error::BadCertificate {
            path: cert_path.to_owned(),
            reason: reason.to_owned(),
        };
        let der = files::load_certs(cert_path)?
            .into_iter()
            .next()
            .ok_or_else(|| bad("no certificate"))?;
        let (_, cert) = X509Certificate::from_der(&der).map_err(|_| bad("cannot parse"))?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .ok_or_else(|| bad("CA certificate has no common name"))?;
        let key = KeyPair::from_pem(key_pem)?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(bad("the CA key does not match the CA certificate"));
        }
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            issuer: Issuer::new(ca_params(cn), key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf certificate for `role` with a default five-year validity.
    pub fn issue(&self, role: &Role) -> Result<Issued> {
        self.issue_with(role, Validity::leaf_default())
    }

    pub fn issue_with(&self, role: &Role, validity: Validity) -> Result<Issued> {
        let mut params = match role {
            Role::Collector(names) => {
                for n in names {
                    if n.parse::<IpAddr>().is_err() && !is_dns_name(n) {
                        return Err(Error::BadServerName { name: n.clone() });
                    }
                }
                let mut p = CertificateParams::new(names.clone())?;
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                p
            }
            Role::Agent(name) | Role::Operator(name) => {
                validate_name(name)?;
                let mut p = CertificateParams::default();
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p
            }
        };
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Vigie");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, role.kind().as_str());
        params
            .distinguished_name
            .push(DnType::CommonName, role.name());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::from(validity.not_before);
        params.not_after = OffsetDateTime::from(validity.not_after);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let serial =
            identity(cert.der())
                .map(|id| id.serial)
                .map_err(|e| Error::BadCertificate {
                    path: PathBuf::from("<issued>"),
                    reason: e.to_string(),
                })?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }

    /// A CRL listing `serials` (lowercase hex), signed by this CA.
    pub fn crl_pem(&self, serials: &[(String, SystemTime)], number: u64) -> Result<String> {
        let now = SystemTime::now();
        let params = CertificateRevocationListParams {
            this_update: OffsetDateTime::from(now - Duration::from_secs(3600)),
            // rustls ignores next_update by default; a far date keeps other readers happy.
            next_update: OffsetDateTime::from(now + 10 * 366 * DAY),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|(hex, at)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex_decode(hex)),
                    revocation_time: OffsetDateTime::from(*at),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'*')
        })
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The files written by `ca issue`.
#[derive(Clone, Debug)]
pub struct IssuedFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: String,
}

/// One line of `index.txt`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct IndexEntry {
    serial: String,
    role: String,
    name: String,
    issued: u64,
    revoked: Option<u64>,
}

/// A CA folder on disk.
#[derive(Clone, Debug)]
pub struct CaFiles {
    dir: PathBuf,
}

impl CaFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CaFiles { dir: dir.into() }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn collector_cert(&self) -> PathBuf {
        self.dir.join("collector.pem")
    }
    pub fn collector_key(&self) -> PathBuf {
        self.dir.join("collector.key")
    }
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    fn index(&self) -> PathBuf {
        self.dir.join("index.txt")
    }

    /// Creates a CA and the collector's certificate for `server_names`. Refuses to touch a
    /// folder that already holds a CA.
    pub fn init(&self, server_names: &[String]) -> Result<Ca> {
        for path in [self.ca_key(), self.ca_cert()] {
            if path.exists() {
                return Err(Error::Exists { path });
            }
        }
        if server_names.is_empty() {
            return Err(Error::BadServerName {
                name: String::new(),
            });
        }
        let ca = Ca::generate()?;
        let collector = ca.issue(&Role::Collector(server_names.to_vec()))?;
        fs::create_dir_all(&self.dir).map_err(|source| Error::Write {
            path: self.dir.clone(),
            source,
        })?;
        // The key first: if it cannot be written, no orphan certificate is left.
        files::write_atomic(
            &self.ca_key(),
            ca.issuer.key().serialize_pem().as_bytes(),
            KEY_MODE,
            Overwrite::Refuse,
        )?;
        files::write_atomic(
            &self.ca_cert(),
            ca.cert_pem.as_bytes(),
            CERT_MODE,
            Overwrite::Refuse,
        )?;
        self.write_leaf(
            &collector,
            &self.collector_cert(),
            &self.collector_key(),
            &Role::Collector(server_names.to_vec()),
        )?;
        Ok(ca)
    }

    /// Loads the CA of this folder.
    pub fn load(&self) -> Result<Ca> {
        let key_pem = files::load_key_pem(&self.ca_key())?;
        let cert_pem = fs::read_to_string(self.ca_cert()).map_err(|source| Error::Read {
            path: self.ca_cert(),
            source,
        })?;
        Ca::from_pem(&self.ca_cert(), &cert_pem, &key_pem)
    }

    /// Issues an agent or operator certificate into `out`: `ca.pem`, `NAME.pem`, `NAME.key`.
    pub fn issue_into(&self, role: &Role, out: &Path) -> Result<IssuedFiles> {
        let ca = self.load()?;
        let issued = ca.issue(role)?;
        fs::create_dir_all(out).map_err(|source| Error::Write {
            path: out.to_owned(),
            source,
        })?;
        let files = IssuedFiles {
            ca: out.join("ca.pem"),
            cert: out.join(format!("{}.pem", role.name())),
            key: out.join(format!("{}.key", role.name())),
            serial: issued.serial.clone(),
        };
        files::write_atomic(
            &files.ca,
            ca.cert_pem.as_bytes(),
            CERT_MODE,
            Overwrite::Allow,
        )?;
        self.write_leaf(&issued, &files.cert, &files.key, role)?;
        Ok(files)
    }

    fn write_leaf(&self, issued: &Issued, cert: &Path, key: &Path, role: &Role) -> Result<()> {
        files::write_atomic(key, issued.key_pem.as_bytes(), KEY_MODE, Overwrite::Allow)?;
        files::write_atomic(
            cert,
            issued.cert_pem.as_bytes(),
            CERT_MODE,
            Overwrite::Allow,
        )?;
        let mut index = self.read_index()?;
        index.push(IndexEntry {
            serial: issued.serial.clone(),
            role: role.kind().as_str().to_owned(),
            name: role.name().to_owned(),
            issued: unix_secs(SystemTime::now()),
            revoked: None,
        });
        self.write_index(&index)
    }

    /// Revokes every certificate issued to `name` and rewrites `crl.pem`. Returns the serials
    /// newly revoked (empty when all were already revoked).
    pub fn revoke(&self, name: &str) -> Result<Vec<String>> {
        let ca = self.load()?;
        let mut index = self.read_index()?;
        if !index.iter().any(|e| e.name == name) {
            return Err(Error::NotIssued {
                name: name.to_owned(),
            });
        }
        let now = unix_secs(SystemTime::now());
        let mut newly = Vec::new();
        for e in index.iter_mut().filter(|e| e.name == name) {
            if e.revoked.is_none() {
                e.revoked = Some(now);
                newly.push(e.serial.clone());
            }
        }
        let revoked: Vec<(String, SystemTime)> = index
            .iter()
            .filter_map(|e| {
                Some((
                    e.serial.clone(),
                    UNIX_EPOCH + Duration::from_secs(e.revoked?),
                ))
            })
            .collect();
        let crl = ca.crl_pem(&revoked, now)?;
        self.write_index(&index)?;
        files::write_atomic(&self.crl(), crl.as_bytes(), CERT_MODE, Overwrite::Allow)?;
        Ok(newly)
    }

    fn read_index(&self) -> Result<Vec<IndexEntry>> {
        let text = match fs::read_to_string(self.index()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Read {
                    path: self.index(),
                    source,
                });
            }
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|(i, line)| {
                let f: Vec<&str> = line.split('\t').collect();
                let bad = || Error::BadCertificate {
                    path: self.index(),
                    reason: format!("line {}: malformed entry", i + 1),
                };
                if f.len() != 5 {
                    return Err(bad());
                }
                Ok(IndexEntry {
                    serial: f[0].to_owned(),
                    role: f[1].to_owned(),
                    name: f[2].to_owned(),
                    issued: f[3].parse().map_err(|_| bad())?,
                    revoked: match f[4] {
                        "-" => None,
                        t => Some(t.parse().map_err(|_| bad())?),
                    },
                })
            })
            .collect()
    }

    fn write_index(&self, index: &[IndexEntry]) -> Result<()> {
        let mut text = String::from("# serial\trole\tname\tissued (unix)\trevoked (unix or -)\n");
        for e in index {
            let revoked = e.revoked.map_or_else(|| "-".to_owned(), |t| t.to_string());
            let _ = writeln!(
                text,
                "{}\t{}\t{}\t{}\t{}",
                e.serial, e.role, e.name, e.issued, revoked
            );
        }
        files::write_atomic(&self.index(), text.as_bytes(), CERT_MODE, Overwrite::Allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::identity;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn issued_certificates_carry_role_and_name() {
        let ca = Ca::generate().expect("ca");
        let agent = ca.issue(&Role::Agent("auray".into())).expect("issue");
        let der = CertificateDer::from_pem_slice(agent.cert_pem.as_bytes()).expect("pem");
        let id = identity(&der).expect("identity");
        assert_eq!(id.role, RoleKind::Agent);
        assert_eq!(id.name, "auray");
        assert_eq!(id.serial, agent.serial);
        assert!(ca.issue(&Role::Agent("Bad Name".into())).is_err());
        assert!(ca.issue(&Role::Collector(vec!["bad name".into()])).is_err());
    }

    #[test]
    fn init_refuses_an_existing_ca_and_reloads_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = CaFiles::new(dir.path());
        files.init(&["127.0.0.1".into()]).expect("init");
        let key_before = fs::read(files.ca_key()).expect("key");
        assert!(matches!(
            files.init(&["127.0.0.1".into()]),
            Err(Error::Exists { .. })
        ));
        assert_eq!(fs::read(files.ca_key()).expect("key"), key_before);
        let out = dir.path().join("out");
        let issued = files
            .issue_into(&Role::Agent("auray".into()), &out)
            .expect("issue");
        assert!(issued.key.exists() && issued.cert.exists() && issued.ca.exists());
        let issued_serial = issued.serial.clone();
        let revoked = files.revoke("auray").expect("revoke");
        assert_eq!(revoked, vec![issued.serial]);
        assert!(files.revoke("auray").expect("again").is_empty());
        assert!(matches!(
            files.revoke("nobody"),
            Err(Error::NotIssued { .. })
        ));
        let crls = files::load_crls(&files.crl()).expect("crl");
        assert_eq!(crate::identity::revoked_serials(&crls), vec![issued_serial]);
    }
}
