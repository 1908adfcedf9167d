//! vigie-collector: keeps the fleet's latest reports and answers the operator.
//!
//! # Layout
//! - [`config`]: `collector.toml`, validated before any socket is bound.
//! - [`registry`]: per-agent state (session, peer, Hello, last report and when it arrived).
//! - [`checks`], [`threshold`]: the check engine (load, disk, mem, swap, users, alive).
//! - [`link`]: the agent port: TLS accept loop, revocation, the `AgentLink` service.
//! - [`nrpe`]: the NRPE-compatible listener for the stock check_nrpe.
//! - [`admin`]: the admin API on a unix socket, server and client.
//! - [`capture`]: relaying captures from agents to the operator; [`pcapfile`] writes them.
//! - [`cli`]: the operator commands (`ca …`, `agents`).
//! - [`plugin`]: `check_vigie`, the Nagios plugin (a second binary of this crate).
//! - [`refusals`]: log lines about refused peers, bounded per port.

pub mod admin;
pub mod capture;
pub mod checks;
pub mod cli;
pub mod config;
pub mod link;
pub mod nrpe;
pub mod pcapfile;
pub mod plugin;
pub mod refusals;
pub mod registry;
pub mod threshold;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};

pub use config::Config;
pub use link::ReloadingTls;
pub use registry::Registry;

/// How long in-flight work may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The collector's TLS state, loaded and validated before any socket is bound.
#[derive(Clone)]
pub struct ServerTls {
    pub agents: Arc<ReloadingTls>,
    /// `None` when there is no NRPE listener or it runs without TLS.
    pub nrpe: Option<Arc<ReloadingTls>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("agents", &self.agents)
            .field("nrpe", &self.nrpe.is_some())
            .finish()
    }
}

/// Loads the TLS material (certificate, key, CA, CRL) named by the config.
pub fn load_tls(config: &Config) -> Result<ServerTls, vigie_certs::Error> {
    let material =
        vigie_certs::TlsMaterial::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    let crl_path = config.tls.crl_path();
    let nrpe = match &config.nrpe {
        Some(n) if n.tls => {
            use vigie_certs::tls::ClientAuth;
            let auth = match n.client_certs {
                config::ClientCerts::None => ClientAuth::None,
                config::ClientCerts::Ask => ClientAuth::Optional,
                config::ClientCerts::Require => ClientAuth::Required,
            };
            Some(Arc::new(ReloadingTls::new(
                link::Flavor::Nrpe(auth),
                material.clone(),
                crl_path.clone(),
            )?))
        }
        _ => None,
    };
    Ok(ServerTls {
        agents: Arc::new(ReloadingTls::new(
            link::Flavor::AgentLink,
            material,
            crl_path,
        )?),
        nrpe,
    })
}

/// Raises the soft limit on open files to the hard one (each agent session holds a
/// descriptor; the default soft limit of 1024 would cap the fleet); returns the new limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// The collector's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    pub agents: TcpListener,
    pub admin: UnixListener,
    /// Removed on shutdown.
    pub admin_path: PathBuf,
    /// NRPE listeners, each with the agent it serves (`None`: named by the first argument).
    pub nrpe: Vec<(TcpListener, Option<String>)>,
    /// The remote admin port, when configured.
    pub admin_tcp: Option<TcpListener>,
}

/// Connections the kernel completes and queues for one port before the collector accepts
/// them (capped by the system's somaxconn). std's 128 is too few for a reconnect storm or
/// for a burst of checks: the SYNs beyond it are dropped and retried a second later.
const BACKLOG: u32 = 4096;

/// Binds a TCP listener with a backlog of [`BACKLOG`].
pub fn listen_tcp(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

impl Listeners {
    /// Binds every listener of the config.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let agents = listen_tcp(config.listen.agents)
            .with_context(|| format!("cannot listen for agents on {}", config.listen.agents))?;
        let mut nrpe = Vec::new();
        if let Some(n) = &config.nrpe {
            let fixed = n.agents.iter().map(|(a, addr)| (*addr, Some(a.clone())));
            for (addr, agent) in n.listen.iter().map(|a| (*a, None)).chain(fixed) {
                let l = listen_tcp(addr)
                    .with_context(|| format!("cannot listen for NRPE on {addr}"))?;
                nrpe.push((l, agent));
            }
        }
        let admin_tcp = match config.listen.admin_tcp {
            Some(addr) => Some(
                listen_tcp(addr)
                    .with_context(|| format!("cannot listen for remote admin on {addr}"))?,
            ),
            None => None,
        };
        let admin = admin::bind(
            &config.listen.admin_socket,
            config.listen.admin_group.as_deref(),
        )?;
        Ok(Listeners {
            agents,
            admin,
            admin_path: config.listen.admin_socket.clone(),
            nrpe,
            admin_tcp,
        })
    }
}

/// Runs the collector on already-bound listeners until `shutdown` completes, then closes
/// agent sessions and gives in-flight requests a bounded grace period.
pub async fn serve(
    config: &Config,
    tls: ServerTls,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::new());
    let engine = checks::Engine::new(registry.clone(), config.checks.stale_after);
    let relay = capture::Relay::new();
    // One watcher re-reads the revocation list for every TLS port.
    let watched: Vec<Arc<ReloadingTls>> = std::iter::once(tls.agents.clone())
        .chain(tls.nrpe.clone())
        .collect();
    let watcher = tokio::spawn(link::watch_revocations(watched, registry.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if let Some(n) = &config.nrpe {
        let server = Arc::new(nrpe::Server::new(
            n.clone(),
            engine.clone(),
            tls.nrpe.clone(),
        ));
        for (listener, agent) in listeners.nrpe {
            tokio::spawn(
                server
                    .clone()
                    .serve(listener, agent, stopped(stop_rx.clone())),
            );
        }
    }
    if let Some(listener) = listeners.admin_tcp {
        let serving = admin::serve_tcp(
            listener,
            tls.agents.clone(),
            registry.clone(),
            engine.clone(),
            relay.clone(),
            stopped(stop_rx.clone()),
        );
        tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!("remote admin server failed: {e}");
            }
        });
    }
    let mut agents = tokio::spawn(link::serve(
        listeners.agents,
        tls.agents,
        registry.clone(),
        relay.clone(),
        stopped(stop_rx.clone()),
    ));
    let mut admin = tokio::spawn(admin::serve(
        listeners.admin,
        registry,
        engine,
        relay,
        stopped(stop_rx),
    ));
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
    watcher.abort();
    let _ = std::fs::remove_file(&listeners.admin_path);
    result
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
