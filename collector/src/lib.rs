//! vigie-collector: keeps the fleet's latest reports and answers the operator.
//!
//! # Layout
//! - [`config`]: `collector.toml`, validated before any socket is bound.
//! - [`registry`]: per-agent state (session, peer, Hello, last report and when it arrived).
//! - [`checks`], [`threshold`]: the check engine (load, disk, mem, swap, users, alive).
//! - [`link`]: the agent port: TLS accept loop, revocation, the `AgentLink` service.
//! - [`admin`]: the admin API on a unix socket, server and client.
//! - [`cli`]: the operator commands (`ca …`, `agents`).

pub mod admin;
pub mod checks;
pub mod cli;
pub mod config;
pub mod link;
pub mod registry;
pub mod threshold;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};

pub use config::Config;
pub use link::AgentTls;
pub use registry::Registry;

/// How long in-flight work may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Loads the agent port's TLS material (certificate, key, CA, CRL) named by the config.
pub fn load_tls(config: &Config) -> Result<Arc<AgentTls>, vigie_certs::Error> {
    let material =
        vigie_certs::TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    Ok(Arc::new(AgentTls::new(material, config.tls.crl_path())?))
}

/// The collector's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    pub agents: TcpListener,
    pub admin: UnixListener,
    /// Removed on shutdown.
    pub admin_path: PathBuf,
}

impl Listeners {
    /// Binds every listener of the config.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let agents = TcpListener::bind(config.listen.agents)
            .await
            .with_context(|| format!("cannot listen for agents on {}", config.listen.agents))?;
        let admin = admin::bind(&config.listen.admin_socket)?;
        Ok(Listeners {
            agents,
            admin,
            admin_path: config.listen.admin_socket.clone(),
        })
    }
}

/// Runs the collector on already-bound listeners until `shutdown` completes, then closes
/// agent sessions and gives in-flight requests a bounded grace period.
pub async fn serve(
    tls: Arc<AgentTls>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut agents = tokio::spawn(link::serve(
        listeners.agents,
        tls,
        registry.clone(),
        stopped(stop_rx.clone()),
    ));
    let mut admin = tokio::spawn(admin::serve(listeners.admin, registry, stopped(stop_rx)));
    let result = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
                let _ = (&mut agents).await;
                let _ = (&mut admin).await;
            }).await;
            if drained.is_err() {
                tracing::warn!("connections still open after {}s; closing them", SHUTDOWN_GRACE.as_secs());
                agents.abort();
                admin.abort();
            }
            Ok(())
        }
        r = &mut agents => r.context("agent server task").and_then(|r| r.context("agent server failed")),
        r = &mut admin => r.context("admin server task").and_then(|r| r.context("admin server failed")),
    };
    let _ = std::fs::remove_file(&listeners.admin_path);
    result
}
