//! Who a certificate names.
//!
//! Vigie leaf certificates carry the name in the subject's common name and the role
//! (`agent`, `operator`, `collector`) in its organizational unit. The identity of a peer is
//! read from its verified certificate, never from anything it sends.

use std::fmt;

use x509_parser::prelude::{FromDer, X509Certificate};

/// The role a certificate was issued for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoleKind {
    Agent,
    Operator,
    Collector,
}

impl RoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Agent => "agent",
            RoleKind::Operator => "operator",
            RoleKind::Collector => "collector",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "agent" => Some(RoleKind::Agent),
            "operator" => Some(RoleKind::Operator),
            "collector" => Some(RoleKind::Collector),
            _ => None,
        }
    }
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity a verified peer certificate proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub role: RoleKind,
    pub name: String,
    /// Serial number, lowercase hex.
    pub serial: String,
}

/// Why a certificate names no usable identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate cannot be parsed")]
    Parse,
    #[error("certificate has no common name")]
    NoCommonName,
    #[error("certificate names no Vigie role (organizational unit agent/operator/collector)")]
    NoRole,
    #[error("certificate common name {0:?} is not a valid Vigie name")]
    BadName(String),
}

/// Reads the identity of a (verified) DER certificate.
pub fn identity(der: &[u8]) -> Result<Identity, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Parse)?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or(IdentityError::NoCommonName)?;
    let role = subject
        .iter_organizational_unit()
        .filter_map(|a| a.as_str().ok())
        .find_map(RoleKind::parse)
        .ok_or(IdentityError::NoRole)?;
    if role != RoleKind::Collector && !is_valid_name(name) {
        return Err(IdentityError::BadName(name.to_owned()));
    }
    Ok(Identity {
        role,
        name: name.to_owned(),
        serial: cert.raw_serial_as_string().replace(':', ""),
    })
}

/// The serial numbers (lowercase hex) a set of CRLs revokes; unparsable CRLs are skipped
/// (rustls refuses them when the server config is built, with the reason).
pub fn revoked_serials(
    crls: &[rustls::pki_types::CertificateRevocationListDer<'_>],
) -> Vec<String> {
    crls.iter()
        .filter_map(|der| x509_parser::parse_x509_crl(der.as_ref()).ok())
        .flat_map(|(_, crl)| {
            crl.iter_revoked_certificates()
                .map(|r| r.raw_serial_as_string().replace(':', ""))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && !b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// Checks an agent or operator name: 1-63 characters of `[a-z0-9._-]`, starting with a letter
/// or digit. Names become file names and Nagios host names, so nothing else is allowed.
pub fn validate_name(name: &str) -> crate::Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(crate::Error::BadName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["auray", "a", "0", "site-12.fw_a", &"a".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "Auray",
            "a b",
            "a/b",
            "é",
            "a\n",
            &"a".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
