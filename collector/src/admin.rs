//! The admin API: what the operator CLI and `check_vigie` ask the collector.
//!
//! It is served on a unix socket whose file permissions are the access control (mode 0660;
//! the service's group, `nagios` in the packaged unit, may use it). This module owns both
//! sides: the server and the client the CLI uses.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};
use vigie_proto::admin_client::AdminClient;
use vigie_proto::admin_server::{Admin, AdminServer};
use vigie_proto::{ListAgentsRequest, ListAgentsResponse};

use crate::registry::Registry;

/// Mode of the admin socket: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// Why the admin socket cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("admin socket {path} is in use: is another collector running?")]
    InUse { path: PathBuf },
    #[error("cannot create the admin socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the admin socket: creates its folder, removes a stale socket left by a collector
/// that died (but never one that still answers), and sets mode 0660.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
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
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(io_err)?;
    Ok(listener)
}

/// The `Admin` gRPC service.
#[derive(Debug, Clone)]
pub struct AdminService {
    registry: Arc<Registry>,
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_agents(
        &self,
        _req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        Ok(Response::new(ListAgentsResponse {
            agents: self.registry.list(),
        }))
    }
}

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tracing::info!(socket = ?listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_owned)), "admin API listening");
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .serve_with_incoming_shutdown(
            AdminServer::new(AdminService { registry }),
            UnixListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// A client of the admin API over the unix socket.
pub async fn connect(socket: &Path) -> anyhow::Result<AdminClient<Channel>> {
    let path = socket.to_owned();
    // The URI is required by tonic but unused: the connector always dials the socket.
    let channel = Endpoint::from_static("http://collector.invalid")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), ToString::to_string);
            anyhow::anyhow!(
                "cannot reach the collector at {}: {cause} (is `vigie-collector serve` running, and may this user open the socket?)",
                socket.display()
            )
        })?;
    Ok(AdminClient::new(channel))
}
