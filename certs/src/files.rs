//! Reading PEM files and writing key material.
//!
//! Writes go to a temporary file in the target's folder (created with its final mode), are
//! synced, then renamed into place, so a reader never sees half a key. Private keys are written
//! with mode 0600, and refused on load when group or others can read them.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::{Error, Result};

/// Mode of private key files.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificate and CRL files (public material).
pub const CERT_MODE: u32 = 0o644;

/// What to do when the target already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    Allow,
    Refuse,
}

/// Writes `contents` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32, overwrite: Overwrite) -> Result<()> {
    let write_err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        match overwrite {
            Overwrite::Allow => fs::rename(&tmp, path),
            // link(2) fails when the target exists, so a concurrent writer cannot be clobbered.
            Overwrite::Refuse => fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp)),
        }
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists && overwrite == Overwrite::Refuse {
            return Err(Error::Exists {
                path: path.to_owned(),
            });
        }
        return Err(write_err(e));
    }
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read(path: &Path) -> Result<(Vec<u8>, fs::Metadata)> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let mut f = File::open(path).map_err(read_err)?;
    let meta = f.metadata().map_err(read_err)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(read_err)?;
    Ok((buf, meta))
}

/// Loads every certificate of a PEM file (a leaf and its chain, or a CA bundle).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let (pem, _) = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Loads a private key, refusing it when group or others may read the file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(load_key_pem(path)?.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => Error::NoKey {
            path: path.to_owned(),
        },
        source => Error::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

/// Reads a private key file as PEM text, with the same permission rule as [`load_key`].
pub fn load_key_pem(path: &Path) -> Result<String> {
    let (pem, meta) = read(path)?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    String::from_utf8(pem).map_err(|_| Error::NoKey {
        path: path.to_owned(),
    })
}

/// Loads the CRLs of a PEM file; a missing file means no revocations.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let pem = match fs::read(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_written_0600_and_refused_when_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        let pem = rcgen::KeyPair::generate().expect("keygen").serialize_pem();
        write_atomic(&path, pem.as_bytes(), KEY_MODE, Overwrite::Refuse).expect("write");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        load_key(&path).expect("a 0600 key loads");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = load_key(&path).expect_err("a 0640 key is refused");
        let msg = err.to_string();
        assert!(msg.contains("k.key") && msg.contains("0640"), "{msg}");
    }

    #[test]
    fn refuse_keeps_the_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.key");
        write_atomic(&path, b"first", KEY_MODE, Overwrite::Refuse).expect("write");
        let err = write_atomic(&path, b"second", KEY_MODE, Overwrite::Refuse).expect_err("refused");
        assert!(matches!(err, Error::Exists { .. }));
        assert_eq!(fs::read(&path).expect("read"), b"first");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
