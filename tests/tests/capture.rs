//! Captures on demand, on loopback (the tests run as root), checked with the pcap crate and
//! with the real `tcpdump -r`.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use vigie_tests::{Agent, Collector, Pki, bin};

/// A running `vigie-collector capture`, with its stderr lines forwarded to a channel.
struct CaptureCli {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl CaptureCli {
    fn start(collector: &Collector, args: &[&str], stdout: Stdio) -> CaptureCli {
        let mut child = Command::new(bin("vigie-collector"))
            .arg("capture")
            .arg("--socket")
            .arg(collector.socket())
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("vigie-collector capture");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        CaptureCli {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_line(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(15)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no stderr line with {needle:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Waits for the exit; returns the code and every stderr line.
    fn finish(mut self) -> (i32, Vec<String>) {
        let status = self.child.wait().expect("wait");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), self.seen)
    }
}

/// A capture the collector or agent refuses: exit 1; returns the stderr lines.
fn refused(collector: &Collector, args: &[&str]) -> Vec<String> {
    let (code, lines) = CaptureCli::start(collector, args, Stdio::null()).finish();
    assert_eq!(code, 1, "{lines:?}");
    lines
}

fn fleet(extra: &str) -> (Pki, Collector, Agent) {
    let pki = Pki::new();
    let collector = Collector::spawn(&pki);
    let agent = Agent::spawn_with(&pki.agent("auray"), &[collector.addr.to_string()], extra);
    collector.wait_connected("auray", Duration::from_secs(10));
    (pki, collector, agent)
}

/// A UDP capture on lo already running: `capture auray -i lo -f 'udp port P' -w FILE EXTRA…`
/// after its "capturing on" line. Returns the CLI, the file's folder, the file and P.
fn udp_capture(
    collector: &Collector,
    extra: &[&str],
) -> (CaptureCli, tempfile::TempDir, std::path::PathBuf, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("capture.pcap");
    let port = free_udp_port();
    let filter = format!("udp port {port}");
    let mut args = vec![
        "auray",
        "-i",
        "lo",
        "-f",
        &filter,
        "-w",
        file.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let mut cli = CaptureCli::start(collector, &args, Stdio::null());
    cli.wait_line("capturing on lo");
    (cli, dir, file, port)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("udp")
        .port()
}

fn send_udp(port: u16, n: usize) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for i in 0..n {
        s.send_to(format!("vigie {i}").as_bytes(), ("127.0.0.1", port))
            .expect("send");
    }
}

/// The packets of a pcap file, read with libpcap.
fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut cap = pcap::Capture::from_file(path).expect("a valid pcap file");
    let mut out = Vec::new();
    while let Ok(p) = cap.next_packet() {
        out.push(p.data.to_vec());
    }
    out
}

/// What `tcpdump -nr` prints for a file, one line per packet.
fn tcpdump(path: &Path) -> Vec<String> {
    let out = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(path)
        .output()
        .expect("tcpdump is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// UDP destination port of an Ethernet/IPv4 frame, as Linux presents loopback.
fn udp_dst_port(frame: &[u8]) -> Option<u16> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.get(9)? != &17 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    Some(u16::from_be_bytes([*ip.get(ihl + 2)?, *ip.get(ihl + 3)?]))
}

fn tcp_ports(frame: &[u8]) -> Option<(u16, u16)> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.get(9)? != &6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    Some((
        u16::from_be_bytes([*ip.get(ihl)?, *ip.get(ihl + 1)?]),
        u16::from_be_bytes([*ip.get(ihl + 2)?, *ip.get(ihl + 3)?]),
    ))
}

#[test]
fn filter_keeps_exactly_the_matching_packets() {
    let (_pki, collector, _agent) = fleet("");
    let (cli, dir, file, port) = udp_capture(&collector, &["-d", "2s"]);
    send_udp(port, 7);
    send_udp(free_udp_port(), 5);
    let (code, lines) = cli.finish();
    assert_eq!(code, 0, "{lines:?}");
    let last = lines.last().expect("a summary");
    assert!(
        last.starts_with("auray lo: 7 packets,")
            && last.contains("0 dropped by the kernel; ended: duration reached (2s)"),
        "{last}"
    );
    let packets = read_pcap(&file);
    assert_eq!(packets.len(), 7);
    assert!(packets.iter().all(|p| udp_dst_port(p) == Some(port)));
    let dump = tcpdump(&file);
    assert_eq!(dump.len(), 7, "{dump:?}");
    assert!(
        dump.iter()
            .all(|l| l.contains(&format!("> 127.0.0.1.{port}: UDP"))),
        "{dump:?}"
    );
    // Nothing but the finished file is left in the folder.
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
}

#[test]
fn count_limit_and_duration_limit() {
    let (_pki, collector, _agent) = fleet("");
    let (cli, dir, file, port) = udp_capture(&collector, &["-c", "3", "-d", "20s"]);
    send_udp(port, 10);
    let (code, lines) = cli.finish();
    assert_eq!(code, 0, "{lines:?}");
    let last = lines.last().expect("summary");
    assert!(
        last.contains("3 packets") && last.contains("ended: packet count reached (3)"),
        "{lines:?}"
    );
    assert_eq!(read_pcap(&file).len(), 3);

    let started = std::time::Instant::now();
    let quiet = dir.path().join("quiet.pcap");
    let (code, lines) = CaptureCli::start(
        &collector,
        &[
            "auray",
            "-i",
            "lo",
            "-f",
            "udp port 9",
            "-d",
            "1s",
            "-w",
            quiet.to_str().expect("utf-8"),
        ],
        Stdio::null(),
    )
    .finish();
    assert_eq!(code, 0, "{lines:?}");
    assert!(
        lines.last().expect("summary").contains("0 packets"),
        "{lines:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(read_pcap(&quiet).is_empty());
}

#[test]
fn policy_clips_bytes_and_refuses_interfaces() {
    let (_pki, collector, _agent) =
        fleet("[capture]\ninterfaces = [\"lo\"]\nmax_bytes = \"300\"\n");
    let (cli, _dir, file, port) = udp_capture(&collector, &["-d", "20s"]);
    assert!(
        cli.seen
            .iter()
            .any(|l| l == "note: max bytes clipped from 50000000 to 300 (capture.max_bytes)"),
        "{:?}",
        cli.seen
    );
    send_udp(port, 20);
    let (code, lines) = cli.finish();
    assert_eq!(code, 0, "{lines:?}");
    assert!(
        lines
            .last()
            .expect("summary")
            .contains("ended: byte limit reached (300 B)"),
        "{lines:?}"
    );
    let packets = read_pcap(&file);
    let total: usize = packets.iter().map(Vec::len).sum();
    assert!(
        !packets.is_empty() && total <= 300,
        "{} packets, {total} bytes",
        packets.len()
    );

    // eth0 exists on the agent, but its policy allows only lo.
    let lines = refused(&collector, &["auray", "-i", "eth0", "-w", "/dev/null"]);
    assert_eq!(
        lines.last().map(String::as_str),
        Some(
            "vigie-collector: interface eth0 is not allowed by this agent's policy (capture.interfaces: lo)"
        )
    );
}

#[test]
fn bad_filter_unknown_interface_and_offline_agent() {
    let (_pki, collector, mut agent) = fleet("");
    let lines = refused(
        &collector,
        &["auray", "-i", "lo", "-f", "udp port", "-w", "/dev/null"],
    );
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].starts_with("vigie-collector: bad filter \"udp port\": ")
            && lines[0].contains("syntax error"),
        "{lines:?}"
    );

    let lines = refused(&collector, &["auray", "-i", "eth9", "-w", "/dev/null"]);
    assert!(
        lines[0].starts_with("vigie-collector: interface eth9 not found on auray; it has: ")
            && lines[0].contains("lo"),
        "{lines:?}"
    );

    let lines = refused(&collector, &["brest", "-i", "lo", "-w", "/dev/null"]);
    assert_eq!(
        lines,
        ["vigie-collector: no agent named \"brest\" has connected to this collector"]
    );

    agent.terminate();
    vigie_tests::wait_until(Duration::from_secs(10), "auray to be disconnected", || {
        collector
            .agents()
            .iter()
            .find(|a| a.name == "auray" && a.state == vigie_proto::AgentState::Disconnected as i32)
            .cloned()
    });
    let lines = refused(&collector, &["auray", "-i", "lo", "-w", "/dev/null"]);
    assert_eq!(
        lines,
        ["vigie-collector: agent auray is offline (disconnected)"]
    );
}

#[test]
fn agent_killed_mid_capture_keeps_what_arrived() {
    let (_pki, collector, mut agent) = fleet("");
    let (cli, _dir, file, port) = udp_capture(&collector, &["-d", "30s"]);
    send_udp(port, 4);
    // Let the chunk reach the collector (chunks leave every 50 ms), then kill the agent.
    std::thread::sleep(Duration::from_millis(500));
    agent.child.kill().expect("kill");
    let (code, lines) = cli.finish();
    assert_eq!(code, 1, "{lines:?}");
    let last = lines.last().expect("summary");
    assert!(
        last.starts_with("auray lo: 4 packets,")
            && last.contains("gone mid-capture")
            && last.contains("kept what arrived"),
        "{last}"
    );
    assert_eq!(read_pcap(&file).len(), 4);
}

#[test]
fn the_agent_never_captures_its_own_connection() {
    let (_pki, collector, _agent) = fleet("");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("all.pcap");
    let mut cli = CaptureCli::start(
        &collector,
        &[
            "auray",
            "-i",
            "lo",
            "-d",
            "3s",
            "-w",
            file.to_str().expect("utf-8"),
        ],
        Stdio::null(),
    );
    cli.wait_line("capturing on lo of auray");
    // Reports flow every second meanwhile; other traffic is captured.
    let port = free_udp_port();
    send_udp(port, 3);
    let (code, lines) = cli.finish();
    assert_eq!(code, 0, "{lines:?}");
    let packets = read_pcap(&file);
    let session_port = collector.addr.port();
    assert!(
        packets
            .iter()
            .filter(|p| udp_dst_port(p) == Some(port))
            .count()
            == 3
    );
    let own: Vec<_> = packets
        .iter()
        .filter_map(|p| tcp_ports(p))
        .filter(|(s, d)| *s == session_port || *d == session_port)
        .collect();
    assert!(
        own.is_empty(),
        "{} packets of the agent's own session were captured",
        own.len()
    );
}

#[test]
fn stdout_pipes_into_tcpdump() {
    let (_pki, collector, _agent) = fleet("");
    let port = free_udp_port();
    let filter = format!("udp port {port}");
    let mut cli = CaptureCli::start(
        &collector,
        &[
            "auray", "-i", "lo", "-f", &filter, "-c", "5", "-d", "20s", "-w", "-",
        ],
        Stdio::piped(),
    );
    let stdout = cli.child.stdout.take().expect("stdout");
    let tcpdump = Command::new("tcpdump")
        .args(["-n", "-r", "-"])
        .stdin(stdout)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    cli.wait_line("capturing on lo of auray");
    send_udp(port, 5);
    let (code, lines) = cli.finish();
    assert_eq!(code, 0, "{lines:?}");
    assert!(
        lines
            .last()
            .expect("summary")
            .ends_with("written to stdout"),
        "{lines:?}"
    );
    let out = tcpdump.wait_with_output().expect("tcpdump output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains(&format!("127.0.0.1.{port}: UDP"))),
        "{text}"
    );
}

#[test]
fn ctrl_c_stops_and_keeps_the_summary() {
    let (_pki, collector, _agent) = fleet("");
    let (cli, _dir, file, port) = udp_capture(&collector, &["-d", "60s"]);
    send_udp(port, 6);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(cli.child.id() as i32, libc::SIGINT) };
    let (code, lines) = cli.finish();
    assert_eq!(code, 0, "{lines:?}");
    let last = lines.last().expect("summary");
    assert!(
        last.starts_with("auray lo: 6 packets,") && last.contains("ended: stopped on request"),
        "{last}"
    );
    assert_eq!(read_pcap(&file).len(), 6);
}
