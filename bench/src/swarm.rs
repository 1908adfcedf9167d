//! Many agents in one process: the same dial, the same Hello, the same backoff as
//! `vigie-agent`, each with its own certificate. Reports are one real sample of this
//! machine, renumbered, so the collector stores and checks messages of the real size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ClientConfig;
use tokio_stream::wrappers::ReceiverStream;
use vigie_agent::session::{BACKOFF_BASE, BACKOFF_MAX, Backoff, STABLE_SESSION};
use vigie_certs::{CaFiles, Role, TlsMaterial};
use vigie_proto::agent_link_client::AgentLinkClient;
use vigie_proto::channel::HostPort;
use vigie_proto::{
    AgentMessage, CollectorMessage, Hello, Report, agent_message, collector_message,
};

use crate::{Target, summary, unix_ms};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Number of agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Report interval of every agent.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Agents started per second at first (the swarm's ramp).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Agent names are PREFIX-00001 and up.
    #[arg(long, default_value = "swarm")]
    prefix: String,
    /// How often to print the counters.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    every: Duration,
    /// Stop after this long (default: at SIGTERM or SIGINT).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    #[command(flatten)]
    target: Target,
    /// Sessions to open, one after the other.
    #[arg(long, default_value_t = 20)]
    count: usize,
    /// The probing agent's name.
    #[arg(long, default_value = "probe")]
    name: String,
}

#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    opened: AtomicU64,
    failed: AtomicU64,
    lost: AtomicU64,
    reports: AtomicU64,
}

/// What every agent of the swarm shares.
struct Shared {
    collector: HostPort,
    hello: Hello,
    report: Report,
    interval: Duration,
    stats: Stats,
}

/// Issues one agent certificate from the CA and builds its client TLS config.
fn agent_tls(ca: &vigie_certs::Ca, name: &str) -> anyhow::Result<Arc<ClientConfig>> {
    let issued = ca.issue(&Role::Agent(name.to_owned()))?;
    let material = TlsMaterial::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem)?;
    Ok(vigie_certs::tls::agent_link_client(&material)?)
}

fn load_ca(target: &Target) -> anyhow::Result<vigie_certs::Ca> {
    CaFiles::new(&target.ca)
        .load()
        .with_context(|| format!("loading the CA in {}", target.ca.display()))
}

pub async fn run(args: Args, fd_limit: u64) -> anyhow::Result<()> {
    if args.agents as u64 + 64 > fd_limit {
        bail!(
            "{} agents need more file descriptors than the limit of {fd_limit}",
            args.agents
        );
    }
    let ca = Arc::new(load_ca(&args.target)?);
    let interval_ms = u32::try_from(args.interval.as_millis()).unwrap_or(u32::MAX);
    let shared = Arc::new(Shared {
        collector: args.target.collector.clone(),
        hello: vigie_agent::metrics::SystemInfo::read().hello(interval_ms),
        report: vigie_agent::metrics::sample(0),
        interval: args.interval,
        stats: Stats::default(),
    });
    let started = Instant::now();
    let spawner = {
        let shared = shared.clone();
        let (prefix, n, rate) = (args.prefix.clone(), args.agents, args.rate.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            for i in 1..=n {
                tick.tick().await;
                let name = format!("{prefix}-{i:05}");
                let ca = ca.clone();
                // Key generation and signing are CPU work: off the reactor.
                let tls = tokio::task::spawn_blocking(move || agent_tls(&ca, &name)).await;
                match tls {
                    Ok(Ok(tls)) => {
                        tokio::spawn(agent(shared.clone(), tls, i));
                    }
                    Ok(Err(e)) => eprintln!("vigie-bench: agent {i}: {e:#}"),
                    Err(e) => eprintln!("vigie-bench: agent {i}: {e}"),
                }
            }
        })
    };
    let reporter = tokio::spawn(print_counters(shared.clone(), started, args.every));
    match args.duration {
        Some(d) => tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = vigie_collector::shutdown_signal() => {}
        },
        None => vigie_collector::shutdown_signal().await,
    }
    spawner.abort();
    reporter.abort();
    Ok(())
}

async fn print_counters(shared: Arc<Shared>, started: Instant, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let s = &shared.stats;
        let line = serde_json::json!({
            "t_ms": unix_ms(),
            "elapsed_s": started.elapsed().as_secs_f64(),
            "connected": s.connected.load(Ordering::Relaxed),
            "opened": s.opened.load(Ordering::Relaxed),
            "failed": s.failed.load(Ordering::Relaxed),
            "lost": s.lost.load(Ordering::Relaxed),
            "reports": s.reports.load(Ordering::Relaxed),
        });
        println!("{line}");
    }
}

/// One agent, for ever: session, backoff, session...
async fn agent(shared: Arc<Shared>, tls: Arc<ClientConfig>, index: usize) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
    let mut hello = shared.hello.clone();
    hello.hostname = format!("swarm-host-{index}");
    let mut seq = 0u64;
    loop {
        let began = Instant::now();
        match session(&shared, &tls, &hello, &mut seq).await {
            Ok(()) => {}
            Err(Failure::Open(e)) => {
                shared.stats.failed.fetch_add(1, Ordering::Relaxed);
                if index == 1 {
                    eprintln!("vigie-bench: agent 1 cannot open a session: {e:#}");
                }
            }
            Err(Failure::Lost) => {
                shared.stats.lost.fetch_add(1, Ordering::Relaxed);
                if began.elapsed() >= STABLE_SESSION {
                    backoff.reset();
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

enum Failure {
    Open(anyhow::Error),
    Lost,
}

/// Dials, says Hello, waits for Welcome; returns the open session.
async fn open(
    collector: &HostPort,
    tls: &Arc<ClientConfig>,
    hello: &Hello,
) -> anyhow::Result<(
    mpsc::Sender<AgentMessage>,
    tonic::Streaming<CollectorMessage>,
)> {
    let (channel, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        vigie_proto::channel::dial_tls_peer(collector, tls.clone()),
    )
    .await
    .map_err(|_| anyhow!("no connection within {}s", CONNECT_TIMEOUT.as_secs()))??;
    let mut client = AgentLinkClient::new(channel);
    let (tx, rx) = mpsc::channel(8);
    let hello = AgentMessage {
        msg: Some(agent_message::Msg::Hello(hello.clone())),
    };
    tx.try_send(hello)
        .map_err(|_| anyhow!("cannot queue Hello"))?;
    let welcomed = async {
        let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        match inbound.message().await? {
            Some(CollectorMessage {
                msg: Some(collector_message::Msg::Welcome(_)),
            }) => Ok(inbound),
            _ => Err(tonic::Status::unknown("no Welcome")),
        }
    };
    let inbound = tokio::time::timeout(CONNECT_TIMEOUT, welcomed)
        .await
        .map_err(|_| anyhow!("no Welcome within {}s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|s| anyhow!(vigie_proto::channel::status_text(&s)))?;
    Ok((tx, inbound))
}

async fn session(
    shared: &Shared,
    tls: &Arc<ClientConfig>,
    hello: &Hello,
    seq: &mut u64,
) -> Result<(), Failure> {
    let (tx, mut inbound) = open(&shared.collector, tls, hello)
        .await
        .map_err(Failure::Open)?;
    let stats = &shared.stats;
    stats.opened.fetch_add(1, Ordering::Relaxed);
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let mut ticker = tokio::time::interval(shared.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send = |seq: &mut u64| {
        *seq += 1;
        let mut report = shared.report.clone();
        report.seq = *seq;
        let msg = AgentMessage {
            msg: Some(agent_message::Msg::Report(report)),
        };
        match tx.try_send(msg) {
            Ok(()) => {
                stats.reports.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    };
    loop {
        let alive = tokio::select! {
            _ = ticker.tick() => send(seq),
            msg = inbound.message() => match msg {
                Ok(Some(CollectorMessage { msg: Some(collector_message::Msg::SampleNow(_)) })) => send(seq),
                Ok(Some(_)) => true,
                Ok(None) | Err(_) => false,
            },
        };
        if !alive {
            stats.connected.fetch_sub(1, Ordering::Relaxed);
            return Err(Failure::Lost);
        }
    }
}

/// Sequential sessions: each one dials, says Hello, gets its Welcome and closes.
pub async fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let ca = load_ca(&args.target)?;
    let tls = agent_tls(&ca, &args.name)?;
    let hello = vigie_agent::metrics::SystemInfo::read().hello(10_000);
    let mut times = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let t0 = Instant::now();
        let session = open(&args.target.collector, &tls, &hello).await?;
        times.push(t0.elapsed());
        drop(session);
    }
    println!("{}", summary(&mut times));
    Ok(())
}
