//! The dial-out session: the only network activity of the agent.
//!
//! The agent walks `collectors` in order and keeps one mutually authenticated HTTP/2
//! connection to the first that accepts it. On it runs one `Session` stream: Hello, then a
//! Report every interval (and on demand). When the session cannot be opened or is lost, the
//! agent waits a random time between zero and a cap that doubles from 1 s to 60 s ("full
//! jitter", so a restarted collector is not hit by every agent at once) and starts over
//! from the first collector. A session that stayed up a minute resets the cap.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio::sync::mpsc;
use tokio_rustls::rustls::ClientConfig;
use tokio_stream::wrappers::ReceiverStream;
use vigie_proto::agent_link_client::AgentLinkClient;
use vigie_proto::{AgentMessage, CollectorMessage, agent_message, collector_message};

use crate::capture::{self, Captures};
use crate::config::{CollectorAddr, Config};
use crate::metrics::{self, SystemInfo};

/// TCP connect plus TLS handshake plus HTTP/2 preface.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the collector may take to answer Hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// A session that lasted this long was healthy: the next failure starts the backoff over.
pub const STABLE_SESSION: Duration = Duration::from_secs(60);
/// How long a stopping agent waits for the collector to acknowledge the end of the session.
const GOODBYE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The backoff's first cap: a lost session is retried within a second.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The backoff's largest cap.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Bound on one message from the collector.
const MAX_MESSAGE: usize = 1 << 20;

/// Exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: 0,
        }
    }

    /// The current cap: base × 2^failures, at most max.
    pub fn cap(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.max)
    }

    /// A random delay in [0, cap], then doubles the cap.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap();
        self.failures = self.failures.saturating_add(1);
        cap.mul_f64(random_unit())
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A uniformly distributed number in [0, 1). `RandomState` is seeded from the OS per
/// process and changes per instance, which is all jitter needs.
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs the agent until `shutdown` completes. Errors are logged, never returned: an agent
/// keeps trying for as long as it runs.
pub async fn run(config: Config, tls: Arc<ClientConfig>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let info = Arc::new(SystemInfo::read());
    tracing::info!(
        collectors = ?config.collectors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        interval = %humantime::format_duration(config.interval),
        "vigie-agent {} starting on {}",
        env!("CARGO_PKG_VERSION"),
        info.hostname,
    );
    let captures = Captures::new(config.capture.clone());
    let dialing = dial_loop(&config, &tls, &info, &captures, stop);
    tokio::pin!(dialing);
    tokio::select! {
        () = shutdown => {
            tracing::info!("stopping");
            let _ = stop_tx.send(true);
            // Let a live session say goodbye; never wait long.
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, &mut dialing).await;
        }
        () = &mut dialing => {}
    }
}

async fn dial_loop(
    config: &Config,
    tls: &Arc<ClientConfig>,
    info: &Arc<SystemInfo>,
    captures: &Arc<Captures>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
    let mut seq = 0u64;
    let mut next = 0usize;
    loop {
        let addr = &config.collectors[next];
        let started = Instant::now();
        let outcome = session(addr, tls, config, info, captures, &mut seq, stop.clone()).await;
        // A capture never outlives its session.
        captures.stop_all();
        if *stop.borrow() {
            return;
        }
        if outcome.established {
            tracing::warn!(collector = %addr, "session lost: {:#}", outcome.error);
            if started.elapsed() >= STABLE_SESSION {
                backoff.reset();
            }
            next = 0;
        } else {
            tracing::warn!(collector = %addr, "cannot open a session: {:#}", outcome.error);
            next = (next + 1) % config.collectors.len();
            if next != 0 {
                // Fail over to the next collector at once.
                continue;
            }
        }
        let cap = backoff.cap();
        let delay = backoff.next_delay();
        tracing::info!(
            "reconnecting in {:.1}s (random wait of at most {}s)",
            delay.as_secs_f64(),
            cap.as_secs()
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

struct Outcome {
    /// Whether the collector welcomed us before the session ended.
    established: bool,
    error: anyhow::Error,
}

async fn session(
    addr: &CollectorAddr,
    tls: &Arc<ClientConfig>,
    config: &Config,
    info: &SystemInfo,
    captures: &Arc<Captures>,
    seq: &mut u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Outcome {
    let failed = |error| Outcome {
        established: false,
        error,
    };
    let dialing = vigie_proto::channel::dial_tls_peer(addr, tls.clone());
    let (channel, peer) = match tokio::time::timeout(CONNECT_TIMEOUT, dialing).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return failed(anyhow!(e)),
        Err(_) => return failed(anyhow!("no answer within {}s", CONNECT_TIMEOUT.as_secs())),
    };
    let mut client = AgentLinkClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let (tx, rx) = mpsc::channel::<AgentMessage>(8);
    let interval_ms = u32::try_from(config.interval.as_millis()).unwrap_or(u32::MAX);
    let mut hello = info.hello(interval_ms);
    let policy = config.capture.clone();
    // Listing interfaces opens each one (for its link type): off the runtime, bounded.
    let listed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || {
            capture::available().then(|| capture::interfaces(&policy))
        }),
    )
    .await;
    if let Ok(Ok(Some(interfaces))) = listed {
        hello.capabilities.push("capture".to_owned());
        hello.interfaces = interfaces;
    }
    let hello = AgentMessage {
        msg: Some(agent_message::Msg::Hello(hello)),
    };
    if tx.try_send(hello).is_err() {
        return failed(anyhow!("internal: cannot queue hello"));
    }
    let opened = tokio::time::timeout(WELCOME_TIMEOUT, async {
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .map_err(status_error)?
            .into_inner();
        match inbound.message().await.map_err(status_error)? {
            Some(CollectorMessage {
                msg: Some(collector_message::Msg::Welcome(w)),
            }) => Ok((inbound, w)),
            Some(_) => Err(anyhow!("collector sent something else than Welcome")),
            None => Err(anyhow!("collector closed the session without a word")),
        }
    })
    .await;
    let (mut inbound, welcome) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return failed(e),
        Err(_) => {
            return failed(anyhow!("no Welcome within {}s", WELCOME_TIMEOUT.as_secs()));
        }
    };
    tracing::info!(
        collector = %addr,
        identity = %welcome.agent_name,
        collector_version = %welcome.collector_version,
        "session established"
    );

    let lost = |error| Outcome {
        established: true,
        error,
    };
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {
                // Ending our stream tells the collector this is a clean stop; it then ends
                // its side, which is what we wait for.
                drop(tx);
                while let Ok(Some(_)) = inbound.message().await {}
                return lost(anyhow!("agent stopping"));
            }
            _ = ticker.tick() => {
                if let Err(e) = send_report(&tx, seq, config.interval).await {
                    return lost(e);
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(CollectorMessage { msg: Some(collector_message::Msg::SampleNow(_)) })) => {
                    if let Err(e) = send_report(&tx, seq, config.interval).await {
                        return lost(e);
                    }
                }
                Ok(Some(CollectorMessage { msg: Some(collector_message::Msg::StartCapture(req)) })) => {
                    captures.start(req, Some(peer), client.clone());
                }
                Ok(Some(CollectorMessage { msg: Some(collector_message::Msg::StopCapture(req)) })) => {
                    captures.stop(&req.capture_id);
                }
                // Commands this agent does not know yet are ignored: newer collectors may
                // talk to older agents.
                Ok(Some(_)) => {}
                Ok(None) => return lost(anyhow!("collector closed the session")),
                Err(status) => return lost(status_error(status)),
            }
        }
    }
}

/// Whether a sample is running on the blocking pool.
static SAMPLING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Samples (on a blocking thread: statvfs can hang on a dead NFS mount) and queues a report.
/// A report that cannot be queued because the collector is not reading is dropped: the next
/// one supersedes it anyway.
async fn send_report(
    tx: &mpsc::Sender<AgentMessage>,
    seq: &mut u64,
    interval: Duration,
) -> anyhow::Result<()> {
    *seq += 1;
    let n = *seq;
    // One sample at a time: a sample stuck on a hung filesystem must not pile up threads.
    if SAMPLING.swap(true, std::sync::atomic::Ordering::AcqRel) {
        tracing::warn!(
            "the previous sample is still running (a hung filesystem?); report {n} skipped"
        );
        return Ok(());
    }
    let report = match tokio::time::timeout(
        interval,
        tokio::task::spawn_blocking(move || {
            let r = metrics::sample(n);
            SAMPLING.store(false, std::sync::atomic::Ordering::Release);
            r
        }),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            SAMPLING.store(false, std::sync::atomic::Ordering::Release);
            return Err(anyhow!("sampling failed: {e}"));
        }
        Err(_) => {
            tracing::warn!("sampling took longer than the interval; report {n} skipped");
            return Ok(());
        }
    };
    let msg = AgentMessage {
        msg: Some(agent_message::Msg::Report(report)),
    };
    match tx.try_send(msg) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!("collector is not reading; report {n} dropped");
            Ok(())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(anyhow!("session stream closed")),
    }
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow!(vigie_proto::channel::status_text(&status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut caps = Vec::new();
        for _ in 0..8 {
            caps.push(b.cap().as_secs());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(60));
        }
        assert_eq!(caps, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.cap(), Duration::from_secs(1));
        // Full jitter: delays spread over the whole [0, cap] range.
        let delays: Vec<f64> = (0..200).map(|_| random_unit()).collect();
        assert!(delays.iter().all(|d| (0.0..1.0).contains(d)));
        assert!(delays.iter().any(|d| *d < 0.25) && delays.iter().any(|d| *d > 0.75));
    }
}
