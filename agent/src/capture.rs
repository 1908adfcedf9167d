//! Captures on demand, bound by the agent's own policy.
//!
//! The collector asks (`StartCapture`); the agent decides: the interface must exist and be
//! allowed, duration, bytes and snaplen are clipped to `[capture]` limits (and the clip is
//! reported), the BPF filter is compiled here with libpcap and refused with libpcap's own
//! words, and the agent's own collector connection is always excluded. libpcap runs on a
//! thread of its own so capturing never delays the reports; packets go up in chunks on an
//! `UploadCapture` stream, where HTTP/2 flow control paces them. Nothing touches the disk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use vigie_proto::agent_link_client::AgentLinkClient;
use vigie_proto::{CaptureChunk, CaptureEnd, CaptureHeader, Interface, StartCapture};

use crate::config::CapturePolicy;

/// A chunk goes up when it holds this many packets or bytes, or is this old.
const CHUNK_PACKETS: usize = 512;
const CHUNK_BYTES: usize = 256 << 10;
const CHUNK_AGE: Duration = Duration::from_millis(50);
/// How long the capture thread sleeps in poll(2) before checking its limits again.
const POLL_MS: i32 = 100;
/// How late the kernel may hand packets over, at most (libpcap's read timeout).
const BATCH_MS: i32 = 50;
/// libpcap's buffer in the kernel.
const PCAP_BUFFER: i32 = 4 << 20;
const DEFAULT_SNAPLEN: u32 = 262_144;

/// libpcap devices that are not network interfaces (Linux).
const NOT_INTERFACES: &[&str] = &["any", "bluetooth", "dbus", "nflog", "nfqueue", "usbmon"];

/// Kernel buffer of the short-lived handle that reads an interface's link type.
const PROBE_BUFFER: i32 = 32 * 1024;

/// The network interfaces of this machine, each marked with whether the policy allows it.
pub fn interfaces(policy: &CapturePolicy) -> Vec<Interface> {
    let Ok(devices) = pcap::Device::list() else {
        return Vec::new();
    };
    devices
        .into_iter()
        .filter(|d| !NOT_INTERFACES.iter().any(|p| d.name.starts_with(p)))
        .map(|d| {
            // The link type is known only once the device is open (needs privileges). The
            // kernel buffer is mapped into the process: keep it small for a mere look
            // (libpcap's default of 2 MB doubled the agent's peak memory).
            let link = pcap::Capture::from_device(d.name.as_str())
                .and_then(|c| c.snaplen(64).buffer_size(PROBE_BUFFER).open())
                .map(|c| c.get_datalink())
                .ok();
            Interface {
                allowed: policy.interfaces.is_empty() || policy.interfaces.contains(&d.name),
                link_type: link.map_or(0, |l| l.0),
                link_type_name: link.and_then(|l| l.get_name().ok()).unwrap_or_default(),
                addresses: d.addresses.iter().map(|a| a.addr.to_string()).collect(),
                name: d.name,
            }
        })
        .collect()
}

/// Whether libpcap works here at all.
pub fn available() -> bool {
    pcap::Device::list().is_ok()
}

/// The request after the policy: what will actually be captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub capture_id: String,
    pub interface: String,
    pub filter: String,
    pub duration: Duration,
    pub max_packets: u64,
    pub max_bytes: u64,
    pub snaplen: u32,
    /// One sentence per limit the policy lowered.
    pub clipped: Vec<String>,
}

/// Applies the policy to a request: refuses a disallowed interface, clips the limits.
pub fn plan(req: &StartCapture, policy: &CapturePolicy) -> Result<Plan, String> {
    if !policy.interfaces.is_empty() && !policy.interfaces.contains(&req.interface) {
        return Err(format!(
            "interface {} is not allowed by this agent's policy (capture.interfaces: {})",
            req.interface,
            policy.interfaces.join(", ")
        ));
    }
    let mut clipped = Vec::new();
    let asked = Duration::from_millis(req.duration_ms);
    let duration = if req.duration_ms == 0 {
        policy.max_duration
    } else if asked > policy.max_duration {
        clipped.push(format!(
            "duration clipped from {} to {} (capture.max_duration)",
            humantime::format_duration(asked),
            humantime::format_duration(policy.max_duration)
        ));
        policy.max_duration
    } else {
        asked
    };
    let max_bytes = if req.max_bytes == 0 {
        policy.max_bytes
    } else if req.max_bytes > policy.max_bytes {
        clipped.push(format!(
            "max bytes clipped from {} to {} (capture.max_bytes)",
            req.max_bytes, policy.max_bytes
        ));
        policy.max_bytes
    } else {
        req.max_bytes
    };
    let wanted = if req.snaplen == 0 {
        DEFAULT_SNAPLEN
    } else {
        req.snaplen
    };
    let snaplen = if wanted > policy.max_snaplen {
        clipped.push(format!(
            "snaplen clipped from {wanted} to {} (capture.max_snaplen)",
            policy.max_snaplen
        ));
        policy.max_snaplen
    } else {
        wanted.max(64)
    };
    Ok(Plan {
        capture_id: req.capture_id.clone(),
        interface: req.interface.clone(),
        filter: req.filter.trim().to_owned(),
        duration,
        max_packets: req.max_packets,
        max_bytes,
        snaplen,
        clipped,
    })
}

/// The filter actually installed: the user's, minus the agent's own collector connection.
pub fn full_filter(user: &str, exclude: Option<SocketAddr>) -> String {
    let own = exclude.map(|a| format!("not (host {} and tcp port {})", a.ip(), a.port()));
    match (user.is_empty(), own) {
        (true, None) => String::new(),
        (true, Some(own)) => own,
        (false, None) => user.to_owned(),
        (false, Some(own)) => format!("({user}) and {own}"),
    }
}

/// The captures running on this agent.
#[derive(Debug)]
pub struct Captures {
    policy: CapturePolicy,
    running: Mutex<HashMap<String, Arc<AtomicBool>>>,
}

impl Captures {
    pub fn new(policy: CapturePolicy) -> Arc<Captures> {
        Arc::new(Captures {
            policy,
            running: Mutex::new(HashMap::new()),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicBool>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a capture and its upload; refusals travel up the same upload stream.
    pub fn start(
        self: &Arc<Self>,
        req: StartCapture,
        exclude: Option<SocketAddr>,
        client: AgentLinkClient<Channel>,
    ) {
        let (tx, rx) = mpsc::channel::<CaptureChunk>(8);
        let id = req.capture_id.clone();
        let mut client = client;
        tokio::spawn(async move {
            match client.upload_capture(ReceiverStream::new(rx)).await {
                Ok(s) => {
                    let s = s.into_inner();
                    tracing::info!(capture = %id, packets = s.packets, bytes = s.bytes, "capture uploaded");
                }
                Err(e) => {
                    tracing::warn!(capture = %id, "capture upload failed: {}", vigie_proto::channel::status_text(&e))
                }
            }
        });
        let refuse = |tx: mpsc::Sender<CaptureChunk>, id: String, error: String| {
            tracing::warn!(capture = %id, "capture refused: {error}");
            let _ = tx.try_send(CaptureChunk {
                capture_id: id,
                error,
                ..CaptureChunk::default()
            });
        };
        let plan = match plan(&req, &self.policy) {
            Ok(p) => p,
            Err(e) => return refuse(tx, req.capture_id, e),
        };
        let stop = Arc::new(AtomicBool::new(false));
        {
            let mut running = self.running();
            if running.len() >= self.policy.max_concurrent as usize {
                drop(running);
                return refuse(
                    tx,
                    req.capture_id,
                    format!(
                        "this agent already runs {} capture(s) (capture.max_concurrent = {})",
                        self.policy.max_concurrent, self.policy.max_concurrent
                    ),
                );
            }
            running.insert(plan.capture_id.clone(), stop.clone());
        }
        tracing::info!(
            capture = %plan.capture_id,
            interface = %plan.interface,
            filter = %plan.filter,
            duration = %humantime::format_duration(plan.duration),
            "capture starting"
        );
        let captures = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("capture-{}", plan.interface))
            .spawn(move || {
                let id = plan.capture_id.clone();
                let end = run(&plan, exclude, &stop, &tx);
                tracing::info!(capture = %id, reason = %end.reason, packets = end.packets, bytes = end.bytes, kernel_drops = end.kernel_drops, "capture ended");
                let end_chunk = CaptureChunk {
                    capture_id: id.clone(),
                    end: Some(end),
                    ..CaptureChunk::default()
                };
                let _ = send_until(&tx, end_chunk, None, Instant::now() + FINAL_SEND);
                captures.running().remove(&id);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a capture thread: {e}");
            self.running().remove(&req.capture_id);
        }
    }

    /// Asks one capture to stop; it sends its end and summary.
    pub fn stop(&self, capture_id: &str) {
        if let Some(flag) = self.running().get(capture_id) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Stops every capture (the session is gone).
    pub fn stop_all(&self) {
        for flag in self.running().values() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// How long the last messages of a capture (its end, a refusal) may wait for the upload.
const FINAL_SEND: Duration = Duration::from_secs(5);

/// Queues a chunk for the upload, waiting while the reader is slow (HTTP/2 back-pressure)
/// but never past `until` nor after `stop` is raised: a stalled reader must not keep a
/// capture beyond its limits. Returns why it gave up.
fn send_until(
    tx: &mpsc::Sender<CaptureChunk>,
    mut chunk: CaptureChunk,
    stop: Option<&AtomicBool>,
    until: Instant,
) -> Result<(), &'static str> {
    loop {
        match tx.try_send(chunk) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err("session lost"),
            Err(mpsc::error::TrySendError::Full(c)) => {
                if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    return Err("stopped");
                }
                if Instant::now() >= until {
                    return Err("duration");
                }
                chunk = c;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Appends one classic pcap record (little-endian header, then the captured bytes).
fn push_record(out: &mut Vec<u8>, ts_sec: i64, ts_usec: i64, orig_len: u32, data: &[u8]) {
    // Classic pcap holds 32-bit seconds: fine until 2106.
    out.extend_from_slice(&(ts_sec as u32).to_le_bytes());
    out.extend_from_slice(&(ts_usec as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&orig_len.to_le_bytes());
    out.extend_from_slice(data);
}

fn open(plan: &Plan, exclude: Option<SocketAddr>) -> Result<pcap::Capture<pcap::Active>, String> {
    let devices = pcap::Device::list().map_err(|e| format!("cannot list interfaces: {e}"))?;
    if !devices.iter().any(|d| d.name == plan.interface) {
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        return Err(format!(
            "interface {} not found on this agent; it has: {}",
            plan.interface,
            names.join(", ")
        ));
    }
    let cap = pcap::Capture::from_device(plan.interface.as_str())
        .map_err(|e| format!("{}: {e}", plan.interface))?
        .promisc(false)
        .snaplen(i32::try_from(plan.snaplen).unwrap_or(i32::MAX))
        // Not immediate mode: the kernel hands packets over in blocks (at most BATCH_MS
        // late), one wake-up per block instead of one per packet. Measured on a UDP flood
        // on loopback: immediate mode cost the agent ~4 µs of CPU per packet.
        .immediate_mode(false)
        .buffer_size(PCAP_BUFFER)
        .timeout(BATCH_MS)
        .open()
        .map_err(|e| format!("cannot open {}: {e}", plan.interface))?;
    let mut cap = cap
        .setnonblock()
        .map_err(|e| format!("cannot open {}: {e}", plan.interface))?;
    // The user's filter alone first, so a mistake is reported in the user's terms.
    if !plan.filter.is_empty() {
        let dead = pcap::Capture::dead(cap.get_datalink()).map_err(|e| e.to_string())?;
        dead.compile(&plan.filter, true)
            .map_err(|e| format!("bad filter {:?}: {e}", plan.filter))?;
    }
    let filter = full_filter(&plan.filter, exclude);
    if !filter.is_empty() {
        cap.filter(&filter, true)
            .map_err(|e| format!("bad filter {filter:?}: {e}"))?;
    }
    Ok(cap)
}

/// The capture thread: opens the device, sends the header, then packets until a limit,
/// a stop, or the upload going away. Returns the end to send.
fn run(
    plan: &Plan,
    exclude: Option<SocketAddr>,
    stop: &AtomicBool,
    tx: &mpsc::Sender<CaptureChunk>,
) -> CaptureEnd {
    let id = plan.capture_id.clone();
    let mut end = CaptureEnd::default();
    let mut cap = match open(plan, exclude) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(capture = %id, "capture refused: {e}");
            let refusal = CaptureChunk {
                capture_id: id,
                error: e.clone(),
                ..CaptureChunk::default()
            };
            let _ = send_until(tx, refusal, None, Instant::now() + FINAL_SEND);
            end.reason = format!("error: {e}");
            return end;
        }
    };
    let header = CaptureHeader {
        interface: plan.interface.clone(),
        link_type: cap.get_datalink().0,
        snaplen: plan.snaplen,
        clipped: plan.clipped.clone(),
        duration_ms: u64::try_from(plan.duration.as_millis()).unwrap_or(u64::MAX),
        max_bytes: plan.max_bytes,
        max_packets: plan.max_packets,
    };
    let deadline = Instant::now() + plan.duration;
    let header = CaptureChunk {
        capture_id: id.clone(),
        header: Some(header),
        ..CaptureChunk::default()
    };
    if let Err(why) = send_until(tx, header, Some(stop), deadline) {
        end.reason = why.into();
        return end;
    }
    // Packets go up as ready-made pcap records: no per-packet allocation here, in the
    // collector or in the CLI.
    let mut batch: Vec<u8> = Vec::with_capacity(CHUNK_BYTES + 65_536);
    let mut batch_count = 0usize;
    let mut batch_started = Instant::now();
    let fd = cap.as_raw_fd();
    let reason: String = 'outer: loop {
        if stop.load(Ordering::Relaxed) {
            break "stopped".into();
        }
        let now = Instant::now();
        if now >= deadline {
            break "duration".into();
        }
        let wait = (deadline - now).as_millis().min(POLL_MS as u128) as i32;
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the capture's descriptor, which lives as long as `cap`.
        unsafe { libc::poll(&mut pfd, 1, wait.max(1)) };
        loop {
            match cap.next_packet() {
                Ok(p) => {
                    let len = p.data.len() as u64;
                    if end.bytes + len > plan.max_bytes {
                        break 'outer "bytes".into();
                    }
                    end.packets += 1;
                    end.bytes += len;
                    batch_count += 1;
                    #[allow(clippy::unnecessary_cast)] // timeval field widths vary by platform
                    push_record(
                        &mut batch,
                        p.header.ts.tv_sec as i64,
                        p.header.ts.tv_usec as i64,
                        p.header.len,
                        p.data,
                    );
                    if plan.max_packets > 0 && end.packets >= plan.max_packets {
                        break 'outer "count".into();
                    }
                    if batch_count >= CHUNK_PACKETS || batch.len() >= CHUNK_BYTES {
                        break;
                    }
                }
                Err(pcap::Error::TimeoutExpired) => break,
                Err(e) => break 'outer format!("error: {e}"),
            }
        }
        if batch_count > 0
            && (batch_count >= CHUNK_PACKETS
                || batch.len() >= CHUNK_BYTES
                || batch_started.elapsed() >= CHUNK_AGE)
        {
            let chunk = CaptureChunk {
                capture_id: id.clone(),
                records: std::mem::replace(&mut batch, Vec::with_capacity(CHUNK_BYTES + 65_536)),
                record_count: batch_count as u32,
                ..CaptureChunk::default()
            };
            batch_count = 0;
            batch_started = Instant::now();
            if let Err(why) = send_until(tx, chunk, Some(stop), deadline) {
                break why.into();
            }
        } else if batch_count == 0 {
            batch_started = Instant::now();
        }
    };
    if batch_count > 0 {
        let last = CaptureChunk {
            capture_id: id,
            records: batch,
            record_count: batch_count as u32,
            ..CaptureChunk::default()
        };
        let _ = send_until(tx, last, None, Instant::now() + FINAL_SEND);
    }
    if let Ok(s) = cap.stats() {
        end.kernel_drops = u64::from(s.dropped) + u64::from(s.if_dropped);
    }
    end.reason = reason;
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CapturePolicy {
        CapturePolicy {
            interfaces: vec!["igb0".into(), "lo".into()],
            max_duration: Duration::from_secs(300),
            max_bytes: 100_000_000,
            max_snaplen: 65_535,
            max_concurrent: 1,
        }
    }

    #[test]
    fn policy_refuses_and_clips() {
        let req = StartCapture {
            capture_id: "c1".into(),
            interface: "igb1".into(),
            duration_ms: 30_000,
            ..StartCapture::default()
        };
        let e = plan(&req, &policy()).expect_err("igb1 is not allowed");
        assert_eq!(
            e,
            "interface igb1 is not allowed by this agent's policy (capture.interfaces: igb0, lo)"
        );

        let req = StartCapture {
            interface: "igb0".into(),
            duration_ms: 3_600_000,
            max_bytes: 1_000_000_000,
            snaplen: 262_144,
            ..req
        };
        let p = plan(&req, &policy()).expect("allowed");
        assert_eq!(p.duration, Duration::from_secs(300));
        assert_eq!(p.max_bytes, 100_000_000);
        assert_eq!(p.snaplen, 65_535);
        assert_eq!(p.clipped.len(), 3);
        assert_eq!(
            p.clipped[0],
            "duration clipped from 1h to 5m (capture.max_duration)"
        );

        let small = StartCapture {
            duration_ms: 2_000,
            max_bytes: 1000,
            snaplen: 96,
            ..req
        };
        let p = plan(&small, &policy()).expect("allowed");
        assert!(p.clipped.is_empty());
        assert_eq!(
            (p.duration, p.max_bytes, p.snaplen),
            (Duration::from_secs(2), 1000, 96)
        );
    }

    #[test]
    fn own_connection_is_always_excluded() {
        let c: SocketAddr = "10.8.0.1:5668".parse().expect("addr");
        assert_eq!(
            full_filter("", Some(c)),
            "not (host 10.8.0.1 and tcp port 5668)"
        );
        assert_eq!(
            full_filter("udp port 53", Some(c)),
            "(udp port 53) and not (host 10.8.0.1 and tcp port 5668)"
        );
        let v6: SocketAddr = "[fd00::1]:5668".parse().expect("addr");
        assert_eq!(
            full_filter("", Some(v6)),
            "not (host fd00::1 and tcp port 5668)"
        );
        assert_eq!(full_filter("icmp", None), "icmp");
    }
}
