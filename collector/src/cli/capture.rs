//! `vigie-collector capture`: asks an agent for a capture and writes it as pcap.
//!
//! To a file, atomically (a temporary name in the same folder, renamed when the capture
//! ends, so a half file is never mistaken for a whole one; if the agent goes away mid-way,
//! what arrived is kept and the summary says so), or to stdout with `-w -`, flushed after
//! every chunk so `| tcpdump -r -` and `| wireshark -k -i -` show packets live. Ctrl-C asks
//! the agent to stop and still waits for the summary; a second Ctrl-C gives up at once.

use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vigie_proto::{CaptureEnd, CaptureHeader, CaptureRequest, StartCapture, StopCaptureRequest};

use crate::pcapfile::PcapWriter;

/// What the operator asked for: the command line of `capture`.
#[derive(Debug, Clone, clap::Args)]
pub struct Request {
    /// The collector's admin socket.
    #[arg(long, short = 'S', value_name = "PATH", default_value = crate::config::DEFAULT_ADMIN_SOCKET)]
    pub socket: PathBuf,
    /// The agent to capture on.
    pub agent: String,
    /// Interface (see `agents --interfaces AGENT`).
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interface: String,
    /// BPF filter, as for tcpdump (compiled on the agent).
    #[arg(
        short = 'f',
        long = "filter",
        value_name = "FILTER",
        default_value = ""
    )]
    pub filter: String,
    /// Stop after this long.
    #[arg(short = 'd', long = "duration", value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many packets (0: no limit).
    #[arg(short = 'c', long = "count", value_name = "COUNT", default_value_t = 0)]
    pub count: u64,
    /// Bytes kept of each packet.
    #[arg(
        short = 's',
        long = "snaplen",
        value_name = "SNAPLEN",
        default_value_t = 262_144
    )]
    pub snaplen: u32,
    /// Stop before the capture holds more packet bytes than this (e.g. 50MB, 1GiB).
    #[arg(long = "max-bytes", value_name = "SIZE", default_value = "50MB", value_parser = vigie_proto::units::parse_size)]
    pub max_bytes: u64,
    /// The pcap file to write (atomically), or - for stdout.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: String,
}

/// Where the packets go.
enum Sink {
    Stdout(PcapWriter<std::io::Stdout>),
    File {
        writer: PcapWriter<BufWriter<File>>,
        temp: PathBuf,
        path: PathBuf,
    },
}

impl Sink {
    fn open(write: &str, header: &CaptureHeader) -> anyhow::Result<Sink> {
        let link = u32::try_from(header.link_type).unwrap_or(0);
        if write == "-" {
            let mut w = PcapWriter::new(std::io::stdout(), link, header.snaplen)?;
            w.flush()?;
            return Ok(Sink::Stdout(w));
        }
        let path = PathBuf::from(write);
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "capture.pcap".into());
        let temp = dir.join(format!(".{name}.partial-{}", std::process::id()));
        // A fresh private file: never follow a planted link, never show traffic to others.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        let writer = PcapWriter::new(BufWriter::new(file), link, header.snaplen)?;
        Ok(Sink::File { writer, temp, path })
    }

    fn packet(&mut self, p: &vigie_proto::CapturedPacket) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.packet(p),
            Sink::File { writer, .. } => writer.packet(p),
        }
    }

    fn records(&mut self, r: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.records(r),
            Sink::File { writer, .. } => writer.records(r),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File { writer, .. } => writer.flush(),
        }
    }

    /// Flushes and, for a file, renames it into place.
    fn finish(self) -> anyhow::Result<String> {
        match self {
            Sink::Stdout(mut w) => {
                w.flush()?;
                Ok("stdout".into())
            }
            Sink::File { writer, temp, path } => {
                let file = writer
                    .into_inner()
                    .into_inner()
                    .map_err(|e| anyhow::anyhow!("writing {}: {}", temp.display(), e.error()))?;
                file.sync_all()?;
                std::fs::rename(&temp, &path).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot rename {} to {}: {e}",
                        temp.display(),
                        path.display()
                    )
                })?;
                Ok(path.display().to_string())
            }
        }
    }
}

/// A line on stderr that does not tear the progress spinner (or plain, when there is none).
fn say(progress: &indicatif::ProgressBar, line: impl AsRef<str>) {
    if progress.is_hidden() {
        eprintln!("{}", line.as_ref());
    } else {
        progress.println(line);
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} B"),
        1_000..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.2} GB", b as f64 / 1e9),
    }
}

fn why(end: &CaptureEnd, header: Option<&CaptureHeader>) -> String {
    let h = header.cloned().unwrap_or_default();
    match end.reason.as_str() {
        "duration" => format!(
            "duration reached ({})",
            humantime::format_duration(Duration::from_millis(h.duration_ms))
        ),
        "count" => format!("packet count reached ({})", h.max_packets),
        "bytes" => format!("byte limit reached ({})", human_bytes(h.max_bytes)),
        "stopped" => "stopped on request".into(),
        "session lost" => "the agent's session was lost".into(),
        other => other.to_owned(),
    }
}

/// The last line: packets, bytes, kernel drops, and why it ended.
fn summary(agent: &str, iface: &str, end: &CaptureEnd, why: &str, to: &str) -> String {
    format!(
        "{agent} {iface}: {} packets, {}, {} dropped by the kernel; ended: {why}; written to {to}",
        end.packets,
        human_bytes(end.bytes),
        end.kernel_drops
    )
}

/// Runs the capture; returns the exit code and the summary line (for stderr).
pub async fn run(req: Request) -> anyhow::Result<(u8, String)> {
    let mut client = crate::admin::connect(&req.socket).await?;
    let mut stopper = client.clone();
    let start = StartCapture {
        capture_id: String::new(),
        interface: req.interface.clone(),
        filter: req.filter.clone(),
        duration_ms: u64::try_from(req.duration.as_millis()).unwrap_or(u64::MAX),
        max_packets: req.count,
        max_bytes: req.max_bytes,
        snaplen: req.snaplen,
    };
    let mut stream = client
        .capture(CaptureRequest {
            agent: req.agent.clone(),
            start: Some(start),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();

    let progress = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut sink: Option<Sink> = None;
    let mut header: Option<CaptureHeader> = None;
    let mut id = String::new();
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut interrupts = 0;
    let outcome: Result<CaptureEnd, String> = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if interrupts > 1 || id.is_empty() {
                    break Err("interrupted".into());
                }
                say(&progress, "stopping the capture (Ctrl-C again to give up at once)");
                if let Err(s) = stopper.stop_capture(StopCaptureRequest { capture_id: id.clone() }).await {
                    break Err(format!("cannot stop the capture: {}", s.message()));
                }
            }
            event = stream.message() => {
                let event = match event {
                    Ok(Some(e)) => e,
                    Ok(None) => break Err("the collector ended the capture stream without a summary".into()),
                    Err(s) => break Err(format!("the collector's stream broke: {}", s.message())),
                };
                id.clone_from(&event.capture_id);
                if !event.error.is_empty() {
                    break Err(event.error);
                }
                if let Some(h) = event.header {
                    for note in &h.clipped {
                        say(&progress, format!("note: {note}"));
                    }
                    say(&progress, format!(
                        "capturing on {} of {} (link type {}, snaplen {}, up to {}{}); Ctrl-C stops",
                        h.interface,
                        req.agent,
                        h.link_type,
                        h.snaplen,
                        humantime::format_duration(Duration::from_millis(h.duration_ms)),
                        if h.max_packets > 0 { format!(" or {} packets", h.max_packets) } else { String::new() },
                    ));
                    match Sink::open(&req.write, &h) {
                        Ok(s) => sink = Some(s),
                        Err(e) => {
                            let _ = stopper.stop_capture(StopCaptureRequest { capture_id: id.clone() }).await;
                            return Err(e);
                        }
                    }
                    header = Some(h);
                }
                if !event.packets.is_empty() || event.record_count > 0 {
                    let Some(s) = sink.as_mut() else {
                        break Err("packets arrived before the capture header".into());
                    };
                    let mut written = Ok(());
                    for p in &event.packets {
                        packets += 1;
                        bytes += p.data.len() as u64;
                        written = s.packet(p);
                        if written.is_err() {
                            break;
                        }
                    }
                    if written.is_ok() && event.record_count > 0 {
                        packets += u64::from(event.record_count);
                        bytes += (event.records.len() as u64)
                            .saturating_sub(16 * u64::from(event.record_count));
                        written = s.records(&event.records);
                    }
                    // Live readers (`-w - | tcpdump -r -`) see each chunk as it arrives.
                    if let Err(e) = written.and_then(|()| s.flush()) {
                        let _ = stopper.stop_capture(StopCaptureRequest { capture_id: id.clone() }).await;
                        break Err(format!("cannot write the capture: {e}"));
                    }
                    progress.set_message(format!(
                        "{packets} packets, {}, {:.0}s",
                        human_bytes(bytes),
                        started.elapsed().as_secs_f64()
                    ));
                }
                if let Some(end) = event.end {
                    break Ok(end);
                }
            }
        }
    };
    progress.finish_and_clear();
    let iface = req.interface.as_str();
    match (outcome, sink) {
        (Ok(end), Some(sink)) => {
            let to = sink.finish()?;
            let why = why(&end, header.as_ref());
            let code = if end.reason.starts_with("error") || end.reason == "session lost" {
                1
            } else {
                0
            };
            Ok((code, summary(&req.agent, iface, &end, &why, &to)))
        }
        (Ok(end), None) => Err(anyhow::anyhow!(
            "the capture ended before it started ({})",
            end.reason
        )),
        (Err(e), None) => Err(anyhow::anyhow!(e)),
        (Err(e), Some(sink)) => {
            // Keep what arrived: a capture cut short is still evidence.
            let end = CaptureEnd {
                reason: e.clone(),
                packets,
                bytes,
                kernel_drops: 0,
            };
            let to = match sink.finish() {
                Ok(to) => to,
                Err(err) => format!("nowhere ({err:#})"),
            };
            Ok((
                1,
                summary(
                    &req.agent,
                    iface,
                    &end,
                    &format!("{e} (kept what arrived; kernel drops unknown)"),
                    &to,
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_say_everything() {
        let end = CaptureEnd {
            reason: "count".into(),
            packets: 42,
            bytes: 5_100,
            kernel_drops: 0,
        };
        let h = CaptureHeader {
            max_packets: 42,
            ..CaptureHeader::default()
        };
        assert_eq!(
            summary("auray", "igb0", &end, &why(&end, Some(&h)), "x.pcap"),
            "auray igb0: 42 packets, 5.1 kB, 0 dropped by the kernel; ended: packet count reached (42); written to x.pcap"
        );
    }
}
