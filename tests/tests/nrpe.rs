//! The stock check_nrpe (Debian's nagios-nrpe-plugin) against a real collector and agent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use vigie_collector::config::{ClientCerts, Nrpe};
use vigie_tests::{Agent, Collector, Pki, wait_until};

const CHECK_NRPE: &str = "/usr/lib/nagios/plugins/check_nrpe";

/// Runs check_nrpe against `addr`; returns (exit code, stdout).
fn check_nrpe(addr: SocketAddr, args: &[&str]) -> (i32, String) {
    let out = Command::new(CHECK_NRPE)
        .args([
            "-H",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-t",
            "5",
        ])
        .args(args)
        .output()
        .expect("check_nrpe is installed (Debian package nagios-nrpe-plugin)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// An NRPE section on free ports, TLS on, with one per-agent port for "auray".
fn nrpe(adjust: impl FnOnce(&mut Nrpe)) -> impl FnOnce(&mut vigie_collector::Config) {
    move |c| {
        let mut n = Nrpe {
            agents: [("auray".to_owned(), "127.0.0.1:0".parse().expect("addr"))].into(),
            ..vigie_tests::nrpe_section()
        };
        adjust(&mut n);
        c.nrpe = Some(n);
    }
}

/// A collector with NRPE and one connected agent named auray.
fn fleet(pki: &Pki, adjust: impl FnOnce(&mut Nrpe)) -> (Collector, Agent) {
    let collector = Collector::spawn_with(pki, nrpe(adjust));
    let agent = Agent::spawn(&pki.agent("auray"), &collector);
    collector.wait_connected("auray", Duration::from_secs(10));
    (collector, agent)
}

fn assert_load_ok((code, out): (i32, String)) {
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("LOAD OK - total load average: "), "{out}");
    assert!(
        out.contains("|load1=") && out.contains(";15.000;30.000;0; load5="),
        "{out}"
    );
}

#[test]
fn check_nrpe_v4_v3_v2_over_tls_and_per_agent_port() {
    let pki = Pki::new();
    let (collector, _agent) = fleet(&pki, |_| {});
    let main = collector.nrpe_addr(None);
    assert_load_ok(check_nrpe(main, &["-c", "check_load", "-a", "auray"]));
    assert_load_ok(check_nrpe(main, &["-3", "-c", "check_load", "-a", "auray"]));
    assert_load_ok(check_nrpe(main, &["-2", "-c", "check_load", "-a", "auray"]));
    // The old tunnel port: no agent argument.
    assert_load_ok(check_nrpe(
        collector.nrpe_addr(Some("auray")),
        &["-c", "check_load"],
    ));
    // Verifying the collector's certificate with the Vigie CA.
    let ca = pki.files.ca_cert();
    assert_load_ok(check_nrpe(
        main,
        &[
            "-A",
            ca.to_str().expect("utf-8"),
            "-c",
            "check_load",
            "-a",
            "auray",
        ],
    ));
    // ...and refusing a collector certificate from another CA.
    let other = Pki::new();
    let (code, out) = check_nrpe(
        main,
        &[
            "-A",
            other.files.ca_cert().to_str().expect("utf-8"),
            "-c",
            "check_load",
            "-a",
            "auray",
        ],
    );
    assert_eq!(code, 2, "{out}");

    let (code, out) = check_nrpe(main, &[]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            &*format!(
                "NRPE v4.1.0 (vigie-collector {})",
                env!("CARGO_PKG_VERSION")
            )
        )
    );

    let (code, out) = check_nrpe(main, &["-c", "check_disk", "-a", "auray"]);
    assert!(
        code < 3 && out.starts_with("DISK ") && out.contains(" / "),
        "{out}"
    );
    assert!(
        out.contains("free space: ") && out.contains("| ") && out.contains(" /="),
        "{out}"
    );
    let (code, out) = check_nrpe(main, &["-c", "check_users", "-a", "auray"]);
    assert!(
        code < 3 && out.contains("users currently logged in |users="),
        "{out}"
    );
    let (code, out) = check_nrpe(main, &["-c", "check_mem", "-a", "auray"]);
    assert!(
        code < 3 && out.starts_with("MEM ") && out.contains("|used="),
        "{out}"
    );
}

#[test]
fn plain_listener_with_check_nrpe_n() {
    let pki = Pki::new();
    let (collector, _agent) = fleet(&pki, |n| n.tls = false);
    let main = collector.nrpe_addr(None);
    assert_load_ok(check_nrpe(main, &["-n", "-c", "check_load", "-a", "auray"]));
    assert_load_ok(check_nrpe(
        main,
        &["-n", "-2", "-c", "check_load", "-a", "auray"],
    ));
}

#[test]
fn client_certificates_required() {
    let pki = Pki::new();
    let (collector, _agent) = fleet(&pki, |n| n.client_certs = ClientCerts::Require);
    let main = collector.nrpe_addr(None);
    let op = pki.operator("nagios");
    assert_load_ok(check_nrpe(
        main,
        &[
            "-C",
            op.cert.to_str().expect("utf-8"),
            "-K",
            op.key.to_str().expect("utf-8"),
            "-c",
            "check_load",
            "-a",
            "auray",
        ],
    ));
    let (code, out) = check_nrpe(main, &["-c", "check_load", "-a", "auray"]);
    assert_ne!(code, 0, "no client certificate: {out}");
    assert!(!out.contains("LOAD OK"), "{out}");

    // Revoked: refused within seconds, without a restart.
    pki.files.revoke("nagios").expect("revoke");
    let with_cert = [
        "-C",
        op.cert.to_str().expect("utf-8"),
        "-K",
        op.key.to_str().expect("utf-8"),
        "-c",
        "check_load",
        "-a",
        "auray",
    ];
    let out = wait_until(
        Duration::from_secs(10),
        "the revoked certificate to be refused",
        || {
            let (code, out) = check_nrpe(main, &with_cert);
            (code != 0).then_some(out)
        },
    );
    assert!(!out.contains("LOAD OK"), "{out}");
}

#[test]
fn unknown_and_stale_agents_are_unknown() {
    let pki = Pki::new();
    let (collector, mut agent) = fleet(&pki, |_| {});
    let main = collector.nrpe_addr(None);
    let (code, out) = check_nrpe(main, &["-c", "check_load", "-a", "brest"]);
    assert_eq!(code, 3);
    assert_eq!(
        out.trim(),
        "LOAD UNKNOWN - no agent named \"brest\" has connected to this collector since it started"
    );
    let (code, out) = check_nrpe(main, &["-c", "check_nope", "-a", "auray"]);
    assert_eq!(
        (code, out.trim()),
        (3, "NRPE: Command 'check_nope' not defined")
    );

    // Frozen: still connected, no longer reporting. Agents report every second, so three
    // seconds without a report is stale.
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGSTOP) };
    let out = wait_until(Duration::from_secs(10), "the report to go stale", || {
        let (code, out) = check_nrpe(main, &["-c", "check_load", "-a", "auray"]);
        (code == 3).then_some(out)
    });
    assert!(
        out.starts_with("LOAD UNKNOWN - last report from auray is "),
        "{out}"
    );
    assert!(out.contains("(stale after 3s), received 20"), "{out}");
    let (code, out) = check_nrpe(main, &["-c", "check_alive", "-a", "auray"]);
    assert_eq!(code, 2, "alive turns CRITICAL: {out}");
    // SAFETY: as above.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGCONT) };

    // Gone: disconnected.
    agent.terminate();
    let out = wait_until(
        Duration::from_secs(10),
        "the agent to be disconnected",
        || {
            let (_, out) = check_nrpe(main, &["-c", "check_users", "-a", "auray"]);
            out.contains("is disconnected since").then_some(out)
        },
    );
    assert!(
        out.starts_with("USERS UNKNOWN - agent auray is disconnected since 20"),
        "{out}"
    );
}

#[test]
fn arguments_refused_unless_allowed() {
    let pki = Pki::new();
    let (collector, _agent) = fleet(&pki, |_| {});
    let (code, out) = check_nrpe(
        collector.nrpe_addr(None),
        &["-c", "check_load", "-a", "auray", "1"],
    );
    assert_eq!(code, 3);
    assert_eq!(
        out.trim(),
        "NRPE: command arguments are disabled on this collector (allow_arguments = false); got 1 argument after the agent name"
    );

    let pki = Pki::new();
    let (collector, _agent) = fleet(&pki, |n| {
        n.allow_arguments = true;
        n.commands
            .insert("check_root".into(), "disk -w $ARG1$ -c $ARG2$ -p /".into());
    });
    let main = collector.nrpe_addr(None);
    let (code, out) = check_nrpe(main, &["-c", "check_root", "-a", "auray", "0%", "0%"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = check_nrpe(main, &["-c", "check_root", "-a", "auray", "100%", "100%"]);
    assert_eq!(code, 2, "nothing is 100% free: {out}");
    // An argument stays one word: it cannot smuggle in options.
    let (code, out) = check_nrpe(
        main,
        &[
            "-c",
            "check_root",
            "-a",
            "auray",
            "5% -p /nonexistent",
            "1%",
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        out.starts_with("DISK UNKNOWN - invalid unit in \"5% -p /nonexistent\""),
        "{out}"
    );
}

#[test]
fn hosts_outside_allowed_hosts_are_refused() {
    let pki = Pki::new();
    let (collector, _agent) = fleet(&pki, |n| {
        n.allowed_hosts = vec!["127.0.0.2".parse().expect("host")];
    });
    let (code, out) = check_nrpe(
        collector.nrpe_addr(None),
        &["-c", "check_load", "-a", "auray"],
    );
    assert_eq!(code, 3, "{out}");
    assert_eq!(
        out.trim(),
        "NRPE: host 127.0.0.1 is not in the collector's allowed_hosts"
    );
}

/// Sends raw bytes to a plain listener and returns everything it answers before closing.
fn exchange(addr: SocketAddr, query: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(query).expect("send");
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    reply
}

/// The reply the stock daemon would send: version, type 2, crc, code, then for v2 a
/// 1024-byte buffer and 2 padding bytes, for v4 alignment, length and text + NUL.
fn expected_reply(version: u16, code: u16, text: &str) -> Vec<u8> {
    let mut p = vec![0, version as u8, 0, 2, 0, 0, 0, 0, 0, code as u8];
    if version == 2 {
        let mut buf = vec![0u8; 1024 + 2];
        buf[..text.len()].copy_from_slice(text.as_bytes());
        p.extend(buf);
    } else {
        p.extend([0, 0]);
        p.extend(((text.len() + 1) as u32).to_be_bytes());
        p.extend(text.as_bytes());
        p.push(0);
    }
    let crc = if version == 3 {
        let mut h = crc32fast::Hasher::new();
        h.update(&p);
        h.update(&[0, 0, 0]);
        h.finalize()
    } else {
        crc32fast::hash(&p)
    };
    p[4..8].copy_from_slice(&crc.to_be_bytes());
    p
}

#[test]
fn replayed_check_nrpe_queries_get_byte_exact_replies() {
    let pki = Pki::new();
    let collector = Collector::spawn_with(&pki, nrpe(|n| n.tls = false));
    let main = collector.nrpe_addr(None);
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../collector/src/nrpe/testdata/"
    );
    let recorded = |name: &str| std::fs::read(format!("{data}{name}")).expect("recorded query");
    let version = format!(
        "NRPE v4.1.0 (vigie-collector {})",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        exchange(main, &recorded("v4-nrpe_check.bin")),
        expected_reply(4, 0, &version)
    );
    let unknown =
        "LOAD UNKNOWN - no agent named \"auray\" has connected to this collector since it started";
    for (file, v) in [
        ("v4-check_load-auray.bin", 4),
        ("v3-check_load-auray.bin", 3),
        ("v2-check_load-auray.bin", 2),
    ] {
        assert_eq!(
            exchange(main, &recorded(file)),
            expected_reply(v, 3, unknown),
            "{file}"
        );
    }
    // A corrupted query gets no answer, and the listener keeps serving.
    let mut bad = recorded("v4-check_load-auray.bin");
    bad[30] ^= 0x55;
    assert!(exchange(main, &bad).is_empty());
    let mut short = recorded("v4-check_load-auray.bin");
    short.truncate(500);
    assert!(
        exchange(main, &short).is_empty(),
        "a truncated query is dropped at the deadline or EOF"
    );
    assert_eq!(
        exchange(main, &recorded("v4-nrpe_check.bin")),
        expected_reply(4, 0, &version)
    );
}
