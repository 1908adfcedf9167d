//! The admin API: what the operator CLI and `check_vigie` ask the collector.
//!
//! It is served on a unix socket whose file permissions are the access control (mode 0660,
//! group `listen.admin_group` or the service's), and optionally on a TCP port
//! (`listen.admin_tcp`) that requires an operator certificate of the Vigie CA. This module
//! owns both sides: the servers and the client the CLI and the plugin use.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use vigie_certs::identity::RoleKind;
use vigie_proto::admin_client::AdminClient;
use vigie_proto::admin_server::{Admin, AdminServer};
use vigie_proto::{
    CaptureEvent, CaptureRequest, CheckRequest, CheckResponse, ListAgentsRequest,
    ListAgentsResponse, StopCaptureRequest, StopCaptureResponse,
};

use crate::capture::Relay;
use crate::checks::Engine;
use crate::link::ReloadingTls;
use crate::registry::Registry;

/// Mode of the admin socket: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// Why the admin socket cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("admin socket {path} is in use: is another collector running?")]
    InUse { path: PathBuf },
    #[error("admin socket {path}: something else than a socket is there; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("admin socket {path}: no group named {group:?} (listen.admin_group)")]
    Group { path: PathBuf, group: String },
    #[error("cannot create the admin socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the admin socket: creates its folder, removes a stale socket left by a collector
/// that died (but never one that still answers), sets mode 0660 and, when given, the group.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse {
                path: path.to_owned(),
            });
        }
        // Only a socket is ours to replace; anything else is a mistake in the path.
        use std::os::unix::fs::FileTypeExt;
        let is_socket = std::fs::symlink_metadata(path)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        if !is_socket {
            return Err(BindError::NotASocket {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let gid = match group {
        Some(g) => Some(group_id(g).ok_or_else(|| BindError::Group {
            path: path.to_owned(),
            group: g.to_owned(),
        })?),
        None => None,
    };
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(io_err)?;
    if gid.is_some() {
        std::os::unix::fs::chown(path, None, gid).map_err(io_err)?;
    }
    Ok(listener)
}

/// The id of a group, from the group database.
fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns NULL or a pointer to a static entry, read at once; the
    // collector looks groups up only here, at start-up.
    let entry = unsafe { libc::getgrnam(c.as_ptr()) };
    // SAFETY: checked for NULL.
    (!entry.is_null()).then(|| unsafe { (*entry).gr_gid })
}

/// The `Admin` gRPC service.
#[derive(Debug, Clone)]
pub struct AdminService {
    registry: Arc<Registry>,
    engine: Engine,
    relay: Arc<Relay>,
    /// On the TCP port: operator certificates are required (and checked against the
    /// revocation list); on the unix socket the file permissions are the gate.
    tcp_tls: Option<Arc<ReloadingTls>>,
}

/// Who may call: anyone who could open the unix socket; over TLS, operators only.
fn authorize<T>(req: &Request<T>, tcp_tls: Option<&ReloadingTls>) -> Result<(), Status> {
    let Some(tls) = tcp_tls else {
        return Ok(());
    };
    let id = crate::link::peer_identity(req, tls)?;
    if id.role != RoleKind::Operator {
        tracing::warn!(peer = ?req.remote_addr(), name = %id.name, role = %id.role, "admin request refused: not an operator certificate");
        return Err(Status::permission_denied(format!(
            "the admin port takes operator certificates only; this is the {} certificate of {:?}",
            id.role, id.name
        )));
    }
    Ok(())
}

type CaptureStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<CaptureEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    type CaptureStream = CaptureStream;

    async fn capture(
        &self,
        req: Request<CaptureRequest>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        authorize(&req, self.tcp_tls.as_deref())?;
        let rx = self.relay.start(&self.registry, req.into_inner())?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn stop_capture(
        &self,
        req: Request<StopCaptureRequest>,
    ) -> Result<Response<StopCaptureResponse>, Status> {
        authorize(&req, self.tcp_tls.as_deref())?;
        self.relay
            .stop(&self.registry, &req.into_inner().capture_id)?;
        Ok(Response::new(StopCaptureResponse {}))
    }

    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        authorize(&req, self.tcp_tls.as_deref())?;
        Ok(Response::new(ListAgentsResponse {
            agents: self.registry.list(),
        }))
    }

    async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        authorize(&req, self.tcp_tls.as_deref())?;
        let req = req.into_inner();
        let outcome = self.engine.run(&req.agent, &req.argv);
        Ok(Response::new(CheckResponse {
            state: outcome.state.code(),
            output: outcome.output,
        }))
    }
}

fn service(
    registry: Arc<Registry>,
    engine: Engine,
    relay: Arc<Relay>,
    tcp_tls: Option<Arc<ReloadingTls>>,
) -> AdminServer<AdminService> {
    AdminServer::new(AdminService {
        registry,
        engine,
        relay,
        tcp_tls,
    })
    .max_decoding_message_size(64 << 10)
}

/// Serves the admin API on the unix socket `listener` until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    registry: Arc<Registry>,
    engine: Engine,
    relay: Arc<Relay>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tracing::info!(socket = ?listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_owned)), "admin API listening");
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .serve_with_incoming_shutdown(
            service(registry, engine, relay, None),
            UnixListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// Serves the admin API on a TCP port that requires operator certificates (mutual TLS,
/// the same CA and revocation list as the agent port).
pub async fn serve_tcp(
    listener: TcpListener,
    tls: Arc<ReloadingTls>,
    registry: Arc<Registry>,
    engine: Engine,
    relay: Arc<Relay>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tracing::info!(addr = ?listener.local_addr().ok(), "admin API listening for operators (mutual TLS)");
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .serve_with_incoming_shutdown(
            service(registry, engine, relay, Some(tls.clone())),
            crate::link::incoming(listener, tls, "admin"),
            shutdown,
        )
        .await
}

/// A client of the admin API over the unix socket.
pub async fn connect(socket: &Path) -> anyhow::Result<AdminClient<Channel>> {
    let channel = vigie_proto::channel::dial_unix(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the collector at {}: {e} (is `vigie-collector serve` running, and may this user open the socket?)",
            socket.display()
        )
    })?;
    // The fleet's list carries every agent's last report: tonic's default 4 MiB bound
    // would refuse it from about 2,500 agents on.
    Ok(AdminClient::new(channel).max_decoding_message_size(MAX_REPLY))
}

/// Bound on one reply of the admin API (room for the list of a fleet of 100,000).
const MAX_REPLY: usize = 512 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_proto::{Filesystem, Hello, ListAgentsRequest, Report};

    /// The fleet's list grows with the fleet: thousands of agents with many filesystems make
    /// a reply far above tonic's default 4 MiB bound, and `agents` must still list them.
    #[tokio::test]
    async fn lists_a_fleet_larger_than_the_default_message_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("collector.sock");
        let registry = Arc::new(Registry::new());
        let filesystem = Filesystem {
            mount_point: "/var/db/some/long/mount/point".into(),
            device: "zroot/var/db/some/long/dataset/name".into(),
            fs_type: "zfs".into(),
            ..Default::default()
        };
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let agents = 3000;
        for i in 0..agents {
            let name = format!("site-{i:05}");
            let (id, _, _) =
                registry.connect(&name, None, Hello::default(), tx.clone(), String::new());
            let report = Report {
                seq: 1,
                filesystems: vec![filesystem.clone(); 20],
                ..Default::default()
            };
            registry.report(&name, id, report);
        }
        let listener = bind(&path, None).expect("bind");
        let engine = Engine::new(registry.clone(), None);
        let server = tokio::spawn(serve(
            listener,
            registry,
            engine,
            Relay::new(),
            std::future::pending(),
        ));
        let mut client = connect(&path).await.expect("connect");
        let reply = client
            .list_agents(ListAgentsRequest {})
            .await
            .expect("list_agents")
            .into_inner();
        assert_eq!(reply.agents.len(), agents);
        assert!(prost::Message::encoded_len(&reply) > 4 << 20);
        server.abort();
    }
}
