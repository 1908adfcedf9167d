//! The spine: agents dial the collector over mutual TLS, report, reconnect, stop cleanly.

use std::time::Duration;

use vigie_proto::AgentState;
use vigie_tests::{Agent, Collector, Pki, run, wait_until};

#[test]
fn agent_appears_with_values_that_match_the_os() {
    let pki = Pki::new();
    let collector = Collector::spawn(&pki);
    let _agent = Agent::spawn(&pki.agent("auray"), &collector);
    let status = collector.wait_connected("auray", Duration::from_secs(10));

    let hello = status.hello.expect("hello");
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hello.os_name, "Linux");
    assert_eq!(hello.interval_ms, 1000);
    assert!(
        status.peer_addr.starts_with("127.0.0.1:"),
        "{}",
        status.peer_addr
    );

    let report = status.last_report.expect("report");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    assert_eq!(report.load.expect("load").cpus, cpus);
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    assert_eq!(report.memory.expect("memory").total_bytes, total_kib * 1024);
    let root = report
        .filesystems
        .iter()
        .find(|f| f.mount_point == "/")
        .expect("/ reported");
    let stat = nix_statvfs("/");
    assert_eq!(root.total_bytes, stat);

    // The CLI shows the same agent, connected, with its figures.
    let socket = collector.socket().to_str().expect("utf-8 path").to_owned();
    let (code, out, err) = run("vigie-collector", &["agents", "--socket", &socket]);
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.starts_with("auray ")).expect("row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "connected", "{out}");
    assert_eq!(cells.len(), 8, "{out}");
    let (code, out, _) = run(
        "vigie-collector",
        &["agents", "--socket", &socket, "--json"],
    );
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json[0]["name"], "auray");
    assert_eq!(json[0]["state"], "connected");
}

fn nix_statvfs(path: &str) -> u64 {
    let c = std::ffi::CString::new(path).expect("path");
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: valid path and buffer; read only on success.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) }, 0);
    // SAFETY: checked above.
    let st = unsafe { st.assume_init() };
    st.f_blocks * st.f_frsize
}

#[test]
fn agent_from_another_ca_is_refused_and_never_listed() {
    let pki = Pki::new();
    let other = Pki::new();
    let collector = Collector::spawn(&pki);
    // The intruder trusts our collector (our ca.pem) but holds a certificate of another CA.
    let mut creds = other.agent("intruder");
    creds.ca = pki.files.ca_cert();
    let intruder = Agent::spawn(&creds, &collector);
    intruder.wait_log(
        "the server refused our certificate: received fatal alert: UnknownCA",
        Duration::from_secs(10),
    );
    // A legitimate agent gets in meanwhile; the intruder never shows up.
    let _good = Agent::spawn(&pki.agent("auray"), &collector);
    collector.wait_connected("auray", Duration::from_secs(10));
    assert!(collector.agents().iter().all(|a| a.name != "intruder"));
}

#[test]
fn operator_certificate_cannot_open_an_agent_session() {
    let pki = Pki::new();
    let collector = Collector::spawn(&pki);
    let op = Agent::spawn(&pki.operator("alice"), &collector);
    let log = op.wait_log("cannot open a session", Duration::from_secs(10));
    assert!(
        log.contains("operator certificate cannot open an agent session"),
        "{log}"
    );
    assert!(collector.agents().is_empty());
}

#[test]
fn agent_is_back_within_5s_after_a_collector_restart() {
    let pki = Pki::new();
    let mut collector = Collector::spawn(&pki);
    let agent = Agent::spawn(&pki.agent("auray"), &collector);
    collector.wait_connected("auray", Duration::from_secs(10));
    collector.restart();
    assert!(
        collector.agents().is_empty(),
        "a restarted collector starts empty"
    );
    collector.wait_connected("auray", Duration::from_secs(5));
    assert!(agent.log_text().contains("session lost"));
}

#[test]
fn agent_fails_over_to_the_next_collector() {
    let pki = Pki::new();
    let collector = Collector::spawn(&pki);
    // Nothing listens on the first entry: a port we bind and close again.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr").to_string();
    drop(dead);
    let agent = Agent::spawn_to(
        &pki.agent("auray"),
        &[dead_addr.clone(), collector.addr.to_string()],
    );
    collector.wait_connected("auray", Duration::from_secs(10));
    let log = agent.log_text();
    assert!(
        log.contains(&dead_addr) && log.contains("Connection refused"),
        "{log}"
    );
}

#[test]
fn second_session_with_one_identity_replaces_the_first() {
    let pki = Pki::new();
    let collector = Collector::spawn(&pki);
    let creds = pki.agent("auray");
    let first = Agent::spawn(&creds, &collector);
    let before = collector.wait_connected("auray", Duration::from_secs(10));
    let _second = Agent::spawn(&creds, &collector);
    first.wait_log(
        "replaced by a newer session of the same agent",
        Duration::from_secs(10),
    );
    let after = wait_until(Duration::from_secs(10), "the newer session", || {
        collector
            .agents()
            .into_iter()
            .find(|a| a.peer_addr != before.peer_addr && a.state == AgentState::Connected as i32)
    });
    assert_eq!(collector.agents().len(), 1, "one identity, one entry");
    assert!(after.connected_since_ms >= before.connected_since_ms);
}

#[test]
fn sigterm_stops_the_agent_cleanly_within_2s() {
    let pki = Pki::new();
    let collector = Collector::spawn(&pki);
    let mut agent = Agent::spawn(&pki.agent("auray"), &collector);
    collector.wait_connected("auray", Duration::from_secs(10));
    let (status, took) = agent.terminate();
    assert_eq!(status.code(), Some(0), "{}", agent.log_text());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // The collector saw a clean goodbye, not a broken connection.
    wait_until(
        Duration::from_secs(5),
        "the agent to show as disconnected",
        || {
            collector
                .agents()
                .into_iter()
                .find(|a| a.name == "auray" && a.state == AgentState::Disconnected as i32)
        },
    );
}

#[test]
fn revoked_agent_is_cut_off_without_a_restart() {
    let pki = Pki::new();
    let collector = Collector::spawn(&pki);
    let agent = Agent::spawn(&pki.agent("auray"), &collector);
    collector.wait_connected("auray", Duration::from_secs(10));
    let dir = pki.files.ca_cert();
    let dir = dir
        .parent()
        .expect("ca dir")
        .to_str()
        .expect("utf-8")
        .to_owned();
    let (code, out, err) = run("vigie-collector", &["ca", "revoke", "--dir", &dir, "auray"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked \"auray\""), "{out}");
    agent.wait_log("certificate revoked", Duration::from_secs(10));
    // It cannot come back: every new handshake is refused.
    agent.wait_log(
        "the server refused our certificate: received fatal alert: CertificateRevoked",
        Duration::from_secs(10),
    );
    let status = collector
        .agents()
        .into_iter()
        .find(|a| a.name == "auray")
        .expect("still listed, as disconnected");
    assert_eq!(status.state, AgentState::Disconnected as i32);
}
