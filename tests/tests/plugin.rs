//! check_vigie, the Nagios plugin: same answers as the NRPE door, clear UNKNOWNs otherwise.

use std::process::Command;
use std::time::Duration;

use vigie_collector::config::Nrpe;
use vigie_tests::{Agent, Collector, Pki, bin};

/// Runs check_vigie; returns (exit code, stdout, stderr).
fn check_vigie(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("check_vigie"))
        .args(args)
        .output()
        .expect("check_vigie");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_nrpe(port: u16, args: &[&str]) -> (i32, String) {
    let out = Command::new("/usr/lib/nagios/plugins/check_nrpe")
        .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-t", "5"])
        .args(args)
        .output()
        .expect("check_nrpe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn same_output_and_exit_code_as_the_nrpe_path() {
    let pki = Pki::new();
    let collector = Collector::spawn_with(&pki, |c| {
        c.nrpe = Some(Nrpe {
            commands: [
                ("check_users".to_owned(), "users -w 5 -c 10".to_owned()),
                ("check_swap".to_owned(), "swap -w 50% -c 20%".to_owned()),
                (
                    "check_root".to_owned(),
                    "disk -w 100% -c 100% -p /".to_owned(),
                ),
            ]
            .into(),
            ..vigie_tests::nrpe_section()
        });
    });
    let _agent = Agent::spawn(&pki.agent("auray"), &collector);
    collector.wait_connected("auray", Duration::from_secs(10));
    let sock = collector.socket().to_str().expect("utf-8").to_owned();
    let port = collector.nrpe_addr(None).port();
    for (nrpe_cmd, check) in [
        ("check_users", vec!["users", "-w", "5", "-c", "10"]),
        ("check_swap", vec!["swap", "-w", "50%", "-c", "20%"]),
    ] {
        let mut args = vec!["-S", &sock, "-a", "auray"];
        args.extend(&check);
        let (code, out, err) = check_vigie(&args);
        assert!(err.is_empty(), "plugins write to stdout only: {err}");
        assert_eq!(
            (code, out),
            check_nrpe(port, &["-c", nrpe_cmd, "-a", "auray"]),
            "{nrpe_cmd}"
        );
    }
    // CRITICAL travels as exit code 2 through both doors.
    let (code, out, _) = check_vigie(&[
        "-S", &sock, "-a", "auray", "disk", "-w", "100%", "-c", "100%", "-p", "/",
    ]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(check_nrpe(port, &["-c", "check_root", "-a", "auray"]).0, 2);
    // And UNKNOWN for an agent nobody knows.
    let (code, out, _) = check_vigie(&["-S", &sock, "-a", "brest", "users", "-w", "5", "-c", "10"]);
    assert_eq!(code, 3);
    assert_eq!(
        out.trim(),
        "USERS UNKNOWN - no agent named \"brest\" has connected to this collector since it started"
    );
    let (code, out, _) = check_vigie(&["-S", &sock, "-a", "auray", "alive"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ALIVE OK - auray reported "), "{out}");
}

#[test]
fn unreachable_silent_or_misused_collector_is_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = dir.path().join("absent.sock");
    let absent = absent.to_str().expect("utf-8");
    let (code, out, _) = check_vigie(&["-S", absent, "-a", "auray", "alive"]);
    assert_eq!(code, 3);
    assert!(
        out.starts_with(&format!(
            "VIGIE UNKNOWN - cannot reach the collector at {absent}: "
        )),
        "{out}"
    );

    // A socket that accepts connections but never answers.
    let silent = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&silent).expect("bind");
    let silent = silent.to_str().expect("utf-8");
    let started = std::time::Instant::now();
    let (code, out, _) = check_vigie(&["-S", silent, "-a", "auray", "alive", "-t", "1"]);
    assert_eq!(code, 3);
    assert_eq!(
        out.trim(),
        format!("VIGIE UNKNOWN - the collector at {silent} did not answer within 1s")
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let (code, out, _) = check_vigie(&["load", "-w", "1", "-c", "2"]);
    assert_eq!(code, 3);
    assert!(
        out.starts_with("VIGIE UNKNOWN - -a AGENT is required. Usage: check_vigie "),
        "{out}"
    );

    let (code, out, _) = check_vigie(&["--help"]);
    assert_eq!(code, 0);
    for part in [
        "Usage:",
        "-S, --socket",
        "-H, --host",
        "-t, --timeout",
        "Examples:",
        "load -w WLOAD1",
    ] {
        assert!(out.contains(part), "--help lacks {part:?}");
    }
    let (code, out, _) = check_vigie(&["-V"]);
    assert_eq!(
        (code, out.trim()),
        (0, &*format!("check_vigie {}", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn remote_admin_port_takes_operator_certificates_only() {
    let pki = Pki::new();
    let collector = Collector::spawn_with(&pki, |c| {
        c.listen.admin_tcp = Some("127.0.0.1:0".parse().expect("addr"));
    });
    let _agent = Agent::spawn(&pki.agent("auray"), &collector);
    collector.wait_connected("auray", Duration::from_secs(10));
    let remote = collector
        .config
        .listen
        .admin_tcp
        .expect("bound")
        .to_string();
    let remote_args = |c: &vigie_tests::Creds| {
        vec![
            "-H".to_owned(),
            remote.clone(),
            "--cert".to_owned(),
            c.cert.display().to_string(),
            "--key".to_owned(),
            c.key.display().to_string(),
            "--ca".to_owned(),
            c.ca.display().to_string(),
            "-a".to_owned(),
            "auray".to_owned(),
            "alive".to_owned(),
        ]
    };
    let op = pki.operator("nagios");
    let args = remote_args(&op);
    let (code, out, _) = check_vigie(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ALIVE OK - auray reported "), "{out}");

    let agent_creds = pki.agent("brest");
    let args = remote_args(&agent_creds);
    let (code, out, _) = check_vigie(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 3);
    assert!(
        out.contains("the admin port takes operator certificates only; this is the agent certificate of \"brest\""),
        "{out}"
    );

    let other_ca = Pki::new();
    let stranger = other_ca.operator("mallory");
    let mut args = remote_args(&stranger);
    args[7] = pki.files.ca_cert().display().to_string();
    let (code, out, _) = check_vigie(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 3);
    assert!(
        out.contains("the server refused our certificate: received fatal alert: UnknownCA"),
        "{out}"
    );
}
