//! Relaying captures: the CLI asks through the admin API, the agent uploads on its own
//! stream, and this module joins the two by capture id.
//!
//! The relay awaits the CLI's stream before taking the next chunk from the agent, so a slow
//! reader slows the agent down through HTTP/2 flow control instead of filling memory. When
//! the CLI goes away the agent is told to stop; when the agent goes away the CLI is told so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use vigie_proto::{
    CaptureChunk, CaptureEvent, CaptureRequest, CaptureSummary, CollectorMessage, StopCapture,
    collector_message,
};

use crate::registry::Registry;

/// How long an agent has to start uploading after the start command.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The CLI side of a capture waiting for (or receiving) its upload.
#[derive(Debug)]
struct Pending {
    agent: String,
    events: mpsc::Sender<Result<CaptureEvent, Status>>,
}

/// Captures in flight, by id.
#[derive(Debug, Default)]
pub struct Relay {
    pending: Mutex<HashMap<String, Pending>>,
    /// Captures whose upload has begun, with their agent (for stop requests).
    running: Mutex<HashMap<String, String>>,
}

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

impl Relay {
    pub fn new() -> Arc<Relay> {
        Arc::new(Relay::default())
    }

    /// Checks the request against what the agent announced, sends the start command and
    /// returns the stream of events for the CLI.
    pub fn start(
        self: &Arc<Self>,
        registry: &Arc<Registry>,
        req: CaptureRequest,
    ) -> Result<mpsc::Receiver<Result<CaptureEvent, Status>>, Status> {
        let agent = req.agent;
        let mut start = req
            .start
            .ok_or_else(|| Status::invalid_argument("no capture parameters"))?;
        let status = registry.status(&agent).ok_or_else(|| {
            Status::not_found(format!(
                "no agent named {agent:?} has connected to this collector"
            ))
        })?;
        if status.state != vigie_proto::AgentState::Connected as i32 {
            return Err(Status::failed_precondition(format!(
                "agent {agent} is offline (disconnected)"
            )));
        }
        let hello = status.hello.unwrap_or_default();
        if !hello.capabilities.iter().any(|c| c == "capture") {
            return Err(Status::failed_precondition(format!(
                "agent {agent} cannot capture (no libpcap, or not allowed to open interfaces)"
            )));
        }
        // Whether the policy allows the interface is the agent's to say.
        if !hello.interfaces.iter().any(|i| i.name == start.interface) {
            let names: Vec<&str> = hello.interfaces.iter().map(|i| i.name.as_str()).collect();
            return Err(Status::not_found(format!(
                "interface {} not found on {agent}; it has: {}",
                start.interface,
                names.join(", ")
            )));
        }
        let id = random_id();
        start.capture_id = id.clone();
        let (tx, rx) = mpsc::channel(32);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                Pending {
                    agent: agent.clone(),
                    events: tx.clone(),
                },
            );
        let msg = CollectorMessage {
            msg: Some(collector_message::Msg::StartCapture(start)),
        };
        if let Err(e) = registry.send(&agent, msg) {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(Status::unavailable(e));
        }
        tracing::info!(agent = %agent, capture = %id, "capture requested");
        // An agent that never uploads (too old, or gone) must not leave the CLI waiting.
        let relay = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(START_TIMEOUT).await;
            let stale = relay
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            if let Some(p) = stale {
                let _ = p
                    .events
                    .send(Ok(CaptureEvent {
                        capture_id: id,
                        error: format!(
                            "agent {} did not start the capture within {}s",
                            p.agent,
                            START_TIMEOUT.as_secs()
                        ),
                        ..CaptureEvent::default()
                    }))
                    .await;
            }
        });
        Ok(rx)
    }

    /// Asks the agent running `capture_id` to stop.
    pub fn stop(&self, registry: &Registry, capture_id: &str) -> Result<(), Status> {
        let agent = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(capture_id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no running capture {capture_id}")))?;
        registry
            .send(
                &agent,
                CollectorMessage {
                    msg: Some(collector_message::Msg::StopCapture(StopCapture {
                        capture_id: capture_id.to_owned(),
                    })),
                },
            )
            .map_err(Status::unavailable)
    }

    /// Relays one agent upload to the CLI that asked for it.
    pub async fn upload(
        &self,
        registry: &Registry,
        agent: &str,
        mut inbound: Streaming<CaptureChunk>,
    ) -> Result<CaptureSummary, Status> {
        let first = tokio::time::timeout(START_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no capture chunk in time"))??
            .ok_or_else(|| Status::invalid_argument("empty upload"))?;
        let id = first.capture_id.clone();
        let pending = {
            let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&id) {
                Some(p) if p.agent == agent => map.remove(&id),
                Some(_) => None,
                None => None,
            }
        }
        .ok_or_else(|| {
            tracing::warn!(agent, capture = %id, "upload for a capture nobody asked this agent for");
            Status::not_found(format!("no capture {id} is waiting for agent {agent}"))
        })?;
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), agent.to_owned());
        let mut summary = CaptureSummary::default();
        let mut ended = false;
        let mut chunk = Some(first);
        let result = loop {
            let c = match chunk.take() {
                Some(c) => c,
                None => match inbound.message().await {
                    Ok(Some(c)) => c,
                    Ok(None) if ended => break Ok(()),
                    Ok(None) => {
                        break Err("the agent's upload ended before the capture did".to_owned());
                    }
                    Err(s) => break Err(format!("the agent's upload broke: {}", s.message())),
                },
            };
            summary.packets += c.packets.len() as u64 + u64::from(c.record_count);
            summary.bytes += c.packets.iter().map(|p| p.data.len() as u64).sum::<u64>()
                + (c.records.len() as u64).saturating_sub(16 * u64::from(c.record_count));
            ended |= c.end.is_some() || !c.error.is_empty();
            let event = CaptureEvent {
                capture_id: id.clone(),
                header: c.header,
                packets: c.packets,
                end: c.end,
                error: c.error,
                records: c.records,
                record_count: c.record_count,
            };
            if pending.events.send(Ok(event)).await.is_err() {
                // The CLI is gone: nobody wants the rest.
                tracing::info!(agent, capture = %id, "capture reader gone; stopping the capture");
                let _ = self.stop(registry, &id);
                break Ok(());
            }
        };
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Err(why) = result {
            tracing::warn!(agent, capture = %id, "{why}");
            let _ = pending
                .events
                .send(Ok(CaptureEvent {
                    capture_id: id,
                    error: format!("agent {agent} gone mid-capture: {why}"),
                    ..CaptureEvent::default()
                }))
                .await;
        }
        Ok(summary)
    }
}
