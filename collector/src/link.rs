//! The agent port: TLS accept loop, certificate revocation, and the `AgentLink` service.
//!
//! TLS is terminated here rather than inside tonic so that every refused handshake is logged
//! with the peer's address and the reason (wrong CA, revoked, expired, no certificate), the
//! handshake has a deadline, and the revocation list can be swapped without a restart.
//! Established connections are then handed to tonic, which reads the peer certificate back
//! through `Request::peer_certs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vigie_certs::TlsMaterial;
use vigie_certs::identity::{RoleKind, identity, revoked_serials};
use vigie_proto::agent_link_server::{AgentLink, AgentLinkServer};
use vigie_proto::{
    AgentMessage, CaptureChunk, CaptureSummary, CollectorMessage, Welcome, agent_message,
    collector_message,
};

use crate::capture::Relay;
use crate::refusals::RefusalLog;
use crate::registry::Registry;

/// TCP accept to the end of the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once on one port; more connections wait in the backlog.
/// A pending handshake costs a socket and a few kilobytes, and is cut at
/// [`HANDSHAKE_TIMEOUT`]: the bound is high enough that a thousand peers that connect and
/// say nothing do not keep agents out (they did at 256: measured in BENCHMARKS.md).
const MAX_HANDSHAKES: usize = 4096;
/// How long an agent has to send Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the revocation list file is checked for changes.
const CRL_POLL: Duration = Duration::from_secs(2);
/// Bound on one message from an agent.
const MAX_MESSAGE: usize = 1 << 20;

/// Which server configuration a [`ReloadingTls`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The agent port and the remote admin port: TLS 1.3, client certificate required.
    AgentLink,
    /// The NRPE listener: TLS 1.2 and 1.3, client certificates as configured.
    Nrpe(vigie_certs::tls::ClientAuth),
}

/// A TLS server state whose acceptor is rebuilt when the CRL file changes, so `ca revoke`
/// takes effect without a restart.
pub struct ReloadingTls {
    flavor: Flavor,
    material: TlsMaterial,
    crl_path: PathBuf,
    current: RwLock<(Option<SystemTime>, TlsAcceptor)>,
    /// Serials of the current CRL: a connection opened before a revocation must not open
    /// new streams after it.
    revoked: RwLock<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("flavor", &self.flavor)
            .field("crl_path", &self.crl_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Builds the acceptor from the collector's certificate and key, the CA, and the CRL.
    pub fn new(
        flavor: Flavor,
        material: TlsMaterial,
        crl_path: PathBuf,
    ) -> Result<Self, vigie_certs::Error> {
        let (mtime, acceptor, serials) = Self::build(flavor, &material, &crl_path)?;
        Ok(ReloadingTls {
            flavor,
            material,
            crl_path,
            current: RwLock::new((mtime, acceptor)),
            revoked: RwLock::new(serials.into_iter().collect()),
        })
    }

    fn build(
        flavor: Flavor,
        material: &TlsMaterial,
        crl_path: &std::path::Path,
    ) -> Result<(Option<SystemTime>, TlsAcceptor, Vec<String>), vigie_certs::Error> {
        let mtime = std::fs::metadata(crl_path).and_then(|m| m.modified()).ok();
        let crls = vigie_certs::files::load_crls(crl_path)?;
        let serials = revoked_serials(&crls);
        let config = match flavor {
            Flavor::AgentLink => vigie_certs::tls::agent_link_server(material, crls)?,
            Flavor::Nrpe(auth) => vigie_certs::tls::nrpe_server(material, auth, crls)?,
        };
        Ok((mtime, TlsAcceptor::from(config), serials))
    }

    /// Whether the current revocation list names this serial (lowercase hex).
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(serial)
    }

    /// The current acceptor (with the latest revocation list).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Reloads the CRL if its file changed; returns the revoked serials when it did.
    fn refresh(&self) -> Result<Option<Vec<String>>, vigie_certs::Error> {
        let mtime = std::fs::metadata(&self.crl_path)
            .and_then(|m| m.modified())
            .ok();
        if mtime == self.current.read().unwrap_or_else(|e| e.into_inner()).0 {
            return Ok(None);
        }
        let (mtime, acceptor, serials) = Self::build(self.flavor, &self.material, &self.crl_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (mtime, acceptor);
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) =
            serials.iter().cloned().collect();
        Ok(Some(serials))
    }
}

/// Accepts TCP connections and completes their TLS handshakes off the accept loop; yields the
/// established streams for tonic.
/// `what` names the port in log lines ("agent", "admin").
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    what: &'static str,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    // Handshakes in flight are bounded: peers without a certificate cannot pile up sockets.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let refusals = RefusalLog::new(what);
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = tx.closed() => break,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server is gone: drop the listener so the port is free again.
                () = tx.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: keep serving, but do not spin.
                    tracing::error!(error = %e, "accept failed on the {what} port");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let (tx, refusals) = (tx.clone(), refusals.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) if refusals.admit() => {
                        tracing::warn!(%peer, "refused {what} connection: tls handshake: {e}");
                    }
                    Err(_) if refusals.admit() => tracing::warn!(
                        %peer,
                        "refused {what} connection: no tls handshake within {}s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ),
                    Ok(Err(_)) | Err(_) => {}
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Re-reads the CRL when it changes, for every TLS server state, and closes the sessions
/// of newly revoked certificates.
pub async fn watch_revocations(states: Vec<Arc<ReloadingTls>>, registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(CRL_POLL);
    loop {
        tick.tick().await;
        for tls in &states {
            refresh_one(tls, &registry);
        }
    }
}

fn refresh_one(tls: &ReloadingTls, registry: &Registry) {
    match tls.refresh() {
        Ok(None) => {}
        Ok(Some(serials)) => {
            tracing::info!(
                file = %tls.crl_path.display(),
                revoked = serials.len(),
                port = ?tls.flavor,
                "revocation list reloaded"
            );
            for name in registry.kill_serials(&serials) {
                tracing::warn!(agent = %name, "closed session: certificate revoked");
            }
        }
        Err(e) => tracing::error!(
            "cannot reload the revocation list (keeping the previous one): {:#}",
            anyhow::Error::from(e)
        ),
    }
}

/// The `AgentLink` gRPC service.
#[derive(Debug, Clone)]
pub struct AgentLinkService {
    registry: Arc<Registry>,
    relay: Arc<Relay>,
    tls: Arc<ReloadingTls>,
}

impl AgentLinkService {
    pub fn new(
        registry: Arc<Registry>,
        relay: Arc<Relay>,
        tls: Arc<ReloadingTls>,
    ) -> AgentLinkServer<Self> {
        AgentLinkServer::new(AgentLinkService {
            registry,
            relay,
            tls,
        })
        .max_decoding_message_size(MAX_MESSAGE)
    }
}

/// The verified identity of the peer behind a request (its certificate's CN), refused when
/// its certificate was revoked after the connection was opened.
pub fn peer_identity<T>(
    req: &Request<T>,
    tls: &ReloadingTls,
) -> Result<vigie_certs::Identity, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let id = identity(leaf.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))?;
    if tls.is_revoked(&id.serial) {
        return Err(Status::permission_denied("certificate revoked"));
    }
    Ok(id)
}

fn agent_identity<T>(
    req: &Request<T>,
    tls: &ReloadingTls,
) -> Result<vigie_certs::Identity, Status> {
    let id = peer_identity(req, tls)?;
    if id.role != RoleKind::Agent {
        return Err(Status::permission_denied(format!(
            "a {} certificate cannot open an agent session",
            id.role
        )));
    }
    Ok(id)
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<CollectorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = req.remote_addr();
        let id = agent_identity(&req, &self.tls).inspect_err(|s| {
            tracing::warn!(peer = ?peer, "refused agent session: {}", s.message());
        })?;
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                msg: Some(agent_message::Msg::Hello(h)),
            }))) => h,
            Ok(Ok(_)) => {
                tracing::warn!(agent = %id.name, peer = ?peer, "refused session: first message was not Hello");
                return Err(Status::invalid_argument("the first message must be Hello"));
            }
            Ok(Err(s)) => return Err(s),
            Err(_) => {
                tracing::warn!(agent = %id.name, peer = ?peer, "refused session: no Hello in time");
                return Err(Status::deadline_exceeded("no Hello in time"));
            }
        };
        let (tx, rx) = mpsc::channel(16);
        let interval = Duration::from_millis(u64::from(hello.interval_ms.max(1000)));
        let version = hello.agent_version.clone();
        let (session, killed, replaced) =
            self.registry
                .connect(&id.name, peer, hello, tx.clone(), id.serial.clone());
        if let Some(old_peer) = replaced {
            tracing::warn!(
                agent = %id.name,
                old_peer = ?old_peer,
                new_peer = ?peer,
                "a second session with the same identity replaces the first"
            );
        }
        tracing::info!(agent = %id.name, peer = ?peer, version = %version, session, "agent connected");
        let welcome = CollectorMessage {
            msg: Some(collector_message::Msg::Welcome(Welcome {
                agent_name: id.name.clone(),
                collector_version: env!("CARGO_PKG_VERSION").to_owned(),
            })),
        };
        // The channel is fresh and has room; this cannot block.
        let _ = tx.try_send(Ok(welcome));
        tokio::spawn(drive(
            self.registry.clone(),
            id.name,
            session,
            inbound,
            tx,
            killed,
            interval,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn upload_capture(
        &self,
        req: Request<Streaming<CaptureChunk>>,
    ) -> Result<Response<CaptureSummary>, Status> {
        let id = agent_identity(&req, &self.tls)?;
        let summary = self
            .relay
            .upload(&self.registry, &id.name, req.into_inner())
            .await?;
        Ok(Response::new(summary))
    }
}

/// Reads one session until it ends, storing reports. Silence longer than three intervals
/// (and at least 30 s) ends it: the agent is gone even if TCP has not noticed.
async fn drive(
    registry: Arc<Registry>,
    name: String,
    session: u64,
    mut inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<CollectorMessage, Status>>,
    mut killed: tokio::sync::oneshot::Receiver<&'static str>,
    interval: Duration,
) {
    let silence = (interval * 3).max(Duration::from_secs(30));
    let reason: String = loop {
        tokio::select! {
            why = &mut killed => {
                let why = why.unwrap_or("closed by the collector");
                // Never wait on an agent that does not read: the status is a courtesy.
                let _ = tx.try_send(Err(Status::aborted(why)));
                break why.to_owned();
            }
            msg = tokio::time::timeout(silence, inbound.message()) => match msg {
                Ok(Ok(Some(AgentMessage { msg: Some(agent_message::Msg::Report(r)) }))) => {
                    registry.report(&name, session, r);
                }
                Ok(Ok(Some(AgentMessage { msg: Some(agent_message::Msg::Hello(_)) }))) => {
                    tracing::debug!(agent = %name, "ignoring a second Hello");
                }
                Ok(Ok(Some(AgentMessage { msg: None }))) => {}
                Ok(Ok(None)) => break "the agent closed the session".to_owned(),
                Ok(Err(s)) => break format!("stream error: {}", s.message()),
                Err(_) => break format!("no message for {}s", silence.as_secs()),
            }
        }
    };
    if registry.disconnect(&name, session) {
        tracing::info!(agent = %name, session, "agent disconnected: {reason}");
    } else {
        tracing::info!(agent = %name, session, "old session ended: {reason}");
    }
}

/// Serves agents on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    registry: Arc<Registry>,
    relay: Arc<Relay>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?local, "listening for agents");
    // Sessions never end on their own; close them so the graceful shutdown can complete.
    let sessions = registry.clone();
    let shutdown = async move {
        shutdown.await;
        let n = sessions.kill_all("the collector is shutting down");
        tracing::info!(sessions = n, "closing agent sessions");
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .serve_with_incoming_shutdown(
            AgentLinkService::new(registry, relay, tls.clone()),
            incoming(listener, tls, "agent"),
            shutdown,
        )
        .await
}
