//! Opening gRPC channels to Vigie servers: over mutual TLS (agents to the collector,
//! operators to the remote admin port) or over the collector's unix socket.
//!
//! Errors come back as one line with their causes, because tonic's own message for every
//! connection failure is only "transport error".

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};

/// A server to dial: a DNS name or an IP address, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port`, `1.2.3.4:port` or `[v6]:port`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("address {s:?} has no port (want host:port)"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || host.contains(['[', ']', '/', ' ']) {
            return Err(format!("address {s:?} has no valid host"));
        }
        if host.contains(':') && !s.starts_with('[') {
            return Err(format!(
                "address {s:?}: write IPv6 addresses as [addr]:port"
            ));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("address {s:?} has an invalid port"))?;
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a channel could not be opened: one line, causes included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialError(pub String);

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DialError {}

/// An error and its causes on one line, skipping causes whose text is already there
/// (tonic and hyper repeat the io error at several levels).
pub fn one_line(head: String, mut source: Option<&dyn std::error::Error>) -> String {
    let mut text = head;
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// A status as one line: code, message, and causes.
pub fn status_text(status: &tonic::Status) -> String {
    let head = format!("{:?}: {}", status.code(), status.message());
    one_line(head, std::error::Error::source(status))
}

/// Opens an HTTP/2 connection: TCP, then TLS with our client certificate, verifying that
/// the server's certificate names the host we dialled.
pub async fn dial_tls(addr: &HostPort, tls: Arc<ClientConfig>) -> Result<Channel, DialError> {
    dial_tls_peer(addr, tls).await.map(|(c, _)| c)
}

/// Like [`dial_tls`], and also says which address the connection went to (the agent
/// excludes that connection from its captures).
pub async fn dial_tls_peer(
    addr: &HostPort,
    tls: Arc<ClientConfig>,
) -> Result<(Channel, std::net::SocketAddr), DialError> {
    let (host, port) = (addr.host.as_str(), addr.port);
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| DialError(format!("invalid host {host:?}")))?;
    let authority = addr.to_string();
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| DialError(format!("invalid address {authority}: {e}")))?
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let connector = TlsConnector::from(tls);
    let host = host.to_owned();
    let peer = Arc::new(std::sync::Mutex::new(None));
    let peer_slot = peer.clone();
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (connector, server_name, host, peer_slot) = (
                connector.clone(),
                server_name.clone(),
                host.clone(),
                peer_slot.clone(),
            );
            async move {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                if let Ok(mut slot) = peer_slot.lock() {
                    *slot = tcp.peer_addr().ok();
                }
                let mut tls = connector
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("tls handshake: {e}")))?;
                await_acceptance(&mut tls).await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| DialError(one_line(String::new(), std::error::Error::source(&e))))?;
    let peer = peer
        .lock()
        .ok()
        .and_then(|p| *p)
        .ok_or_else(|| DialError("connected, but the peer address is unknown".into()))?;
    Ok((channel, peer))
}

/// Opens an HTTP/2 connection over a unix socket (the collector's admin API).
pub async fn dial_unix(socket: &Path) -> Result<Channel, DialError> {
    let path = socket.to_owned();
    // tonic wants a URI; the connector ignores it and always dials the socket.
    Endpoint::from_static("http://collector.invalid")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| DialError(one_line(String::new(), std::error::Error::source(&e))))
}

/// How long to wait for the server's verdict on our certificate.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(5);

/// In TLS 1.3 the server checks the client's certificate after the client considers the
/// handshake done, so a refusal (unknown CA, expired, revoked) would otherwise surface later
/// as a bare "broken pipe". Vigie servers answer an accepted certificate with session
/// tickets and a refused one with an alert: read that first record so the log can say which.
async fn await_acceptance(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> io::Result<()> {
    struct TryRead<'a>(&'a TcpStream);
    impl io::Read for TryRead<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.try_read(buf)
        }
    }
    let verdict = async {
        loop {
            let (tcp, conn) = tls.get_mut();
            tcp.readable().await?;
            match conn.read_tls(&mut TryRead(tcp)) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the server closed the connection after the TLS handshake",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            let state = conn.process_new_packets().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the server refused our certificate: {e}"),
                )
            })?;
            if state.peer_has_closed() {
                continue;
            }
            return Ok(());
        }
    };
    match tokio::time::timeout(VERDICT_TIMEOUT, verdict).await {
        Ok(r) => r,
        // No ticket: an older or differently configured server. Carry on; a refusal will
        // show on the first request instead.
        Err(_) => Ok(()),
    }
}
