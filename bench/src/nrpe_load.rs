//! A concurrent NRPE v4 client: one connection per query, as check_nrpe does (TLS without
//! session resumption, a full handshake every time), C clients in a loop for S seconds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use vigie_collector::nrpe::packet::{Version, encode_query};

use crate::summary;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The NRPE listener.
    #[arg(long)]
    addr: SocketAddr,
    /// Plain TCP (check_nrpe -n) instead of TLS.
    #[arg(long)]
    plain: bool,
    /// Verify the collector's certificate against this CA. Without it, like check_nrpe
    /// without -A, any certificate is accepted (the handshake signature is still checked).
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Concurrent clients; one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// Length of each run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The query, as check_nrpe sends it: the command, then '!' and the arguments.
    #[arg(long, default_value = "check_load!bench")]
    query: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tls = match args.plain {
        false => Some(connector(args.ca.as_deref())?),
        true => None,
    };
    let query: Arc<[u8]> = encode_query(Version::V4, &args.query).into();
    // One query first: a wrong address or a refused client is one clear line, not a
    // thousand.
    let first = check(args.addr, tls.as_ref(), &query).await?;
    if first.0 > 2 {
        bail!("the first query answered UNKNOWN: {}", first.1);
    }
    for &c in &args.concurrency {
        let deadline = Instant::now() + args.duration;
        let started = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..c.max(1) {
            let (tls, query) = (tls.clone(), query.clone());
            clients.push(tokio::spawn(async move {
                let mut times = Vec::new();
                let mut errors = 0u64;
                let mut last_error = None;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    match check(args.addr, tls.as_ref(), &query).await {
                        Ok(_) => times.push(t0.elapsed()),
                        Err(e) => {
                            errors += 1;
                            last_error = Some(format!("{e:#}"));
                        }
                    }
                }
                (times, errors, last_error)
            }));
        }
        let mut times = Vec::new();
        let (mut errors, mut last_error) = (0, None);
        for client in clients {
            let (t, e, l) = client.await?;
            times.extend(t);
            errors += e;
            last_error = last_error.or(l);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let mut line = summary(&mut times);
        line["concurrency"] = c.into();
        line["tls"] = tls.is_some().into();
        line["checks_per_s"] = (times.len() as f64 / elapsed).into();
        line["errors"] = errors.into();
        if let Some(e) = last_error {
            line["last_error"] = e.into();
        }
        println!("{line}");
    }
    Ok(())
}

fn connector(ca: Option<&std::path::Path>) -> anyhow::Result<TlsConnector> {
    let provider = vigie_certs::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in vigie_certs::files::load_certs(ca)? {
                roots.add(c)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    // check_nrpe starts afresh every time: no resumption.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One query on a new connection: (result code, text).
async fn check(
    addr: SocketAddr,
    tls: Option<&TlsConnector>,
    query: &[u8],
) -> anyhow::Result<(i16, String)> {
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    match tls {
        Some(tls) => {
            let name = ServerName::IpAddress(addr.ip().into());
            let s = tls.connect(name, tcp).await.context("tls handshake")?;
            exchange(s, query).await
        }
        None => exchange(tcp, query).await,
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    query: &[u8],
) -> anyhow::Result<(i16, String)> {
    s.write_all(query).await?;
    s.flush().await?;
    let mut reply = Vec::with_capacity(1100);
    // The server closes after its reply; a TLS peer that skips close_notify is fine here.
    match s.read_to_end(&mut reply).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => {}
        Err(e) => return Err(e).context("reading the reply"),
    }
    if reply.len() < 16 || reply[2..4] != [0, 2] {
        return Err(anyhow!("short or malformed reply ({} bytes)", reply.len()));
    }
    let code = i16::from_be_bytes([reply[8], reply[9]]);
    let len = u32::from_be_bytes([reply[12], reply[13], reply[14], reply[15]]) as usize;
    let text = reply.get(16..16 + len).unwrap_or_default();
    let text = String::from_utf8_lossy(text);
    Ok((code, text.trim_end_matches('\0').to_owned()))
}

/// check_nrpe's default: the server's certificate is not verified, only the handshake's
/// signature made with its key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
