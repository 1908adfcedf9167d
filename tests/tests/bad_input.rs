//! Bad input gets one line that says what and where, the right exit code, and no panic.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use vigie_certs::Validity;
use vigie_tests::{Agent, Collector, Pki, agent_config, run};

/// Runs `vigie-agent run` on a config and expects exit 64 with one line containing `needle`.
fn agent_refuses(config: &std::path::Path, needle: &str) {
    let (code, _, err) = run(
        "vigie-agent",
        &["run", "--config", config.to_str().expect("utf-8")],
    );
    assert_eq!(code, 64, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn agent_config_errors_exit_64_with_file_and_line() {
    let pki = Pki::new();
    let creds = pki.agent("auray");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = agent_config(dir.path(), &creds, &["127.0.0.1:5668".into()], "10s");
    let good = std::fs::read_to_string(&path).expect("read");

    std::fs::write(&path, good.replace("interval", "intervall")).expect("write");
    agent_refuses(
        &path,
        &format!("{}:2:1: unknown field `intervall`", path.display()),
    );

    std::fs::write(&path, good.replace("\"10s\"", "\"10 fortnights\"")).expect("write");
    agent_refuses(&path, "invalid duration \"10 fortnights\"");

    std::fs::write(&path, good.replace("127.0.0.1:5668", "127.0.0.1")).expect("write");
    agent_refuses(&path, "has no port");

    agent_refuses(&dir.path().join("missing.toml"), "cannot read config");
}

#[test]
fn agent_key_and_cert_problems_exit_64_naming_the_file() {
    let pki = Pki::new();
    let creds = pki.agent("auray");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = agent_config(dir.path(), &creds, &["127.0.0.1:5668".into()], "10s");

    std::fs::set_permissions(&creds.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    agent_refuses(
        &path,
        &format!(
            "{}: private key is readable by group or others",
            creds.key.display()
        ),
    );
    std::fs::set_permissions(&creds.key, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    std::fs::remove_file(&creds.cert).expect("rm");
    agent_refuses(&path, &format!("cannot read {}", creds.cert.display()));
}

/// Runs `vigie-collector serve` on a config with `text`; returns the code and stderr.
fn serve(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, text).expect("write");
    let (code, _, err) = run(
        "vigie-collector",
        &["serve", "--config", path.to_str().expect("utf-8")],
    );
    (code, err)
}

#[test]
fn collector_config_errors_exit_64() {
    let (code, err) = serve("[listen]\nagents = \"127.0.0.1:0\"\nsocket = \"x\"\n");
    assert_eq!(code, 64, "{err}");
    assert!(err.contains(":3:1: unknown field `socket`"), "{err}");

    let (code, err) =
        serve("[tls]\nca = \"nope/ca.pem\"\ncert = \"nope/c.pem\"\nkey = \"nope/c.key\"\n");
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("[tls]") && err.contains("nope/ca.pem"),
        "{err}"
    );
}

#[test]
fn ca_commands_refuse_bad_names_and_never_overwrite_a_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    let ca = ca.to_str().expect("utf-8");
    let (code, _, err) = run(
        "vigie-collector",
        &["ca", "init", "--dir", ca, "--server-name", "127.0.0.1"],
    );
    assert_eq!(code, 0, "{err}");
    let key = std::fs::read(dir.path().join("ca/ca.key")).expect("key");
    let mode = std::fs::metadata(dir.path().join("ca/ca.key"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let (code, _, err) = run(
        "vigie-collector",
        &["ca", "init", "--dir", ca, "--server-name", "x"],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("ca/ca.key")).expect("key"),
        key
    );

    let out = dir.path().join("out");
    let out = out.to_str().expect("utf-8");
    let (code, _, err) = run(
        "vigie-collector",
        &[
            "ca", "issue", "--dir", ca, "--agent", "Bad Name", "--out", out,
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("invalid name \"Bad Name\""), "{err}");

    let (code, _, err) = run(
        "vigie-collector",
        &["ca", "issue", "--dir", ca, "--out", out],
    );
    assert_eq!(
        code, 64,
        "missing --agent/--operator is a usage error: {err}"
    );

    let (code, stdout, err) = run(
        "vigie-collector",
        &["ca", "issue", "--dir", ca, "--agent", "auray", "--out", out],
    );
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("auray.key"));
    for f in ["ca.pem", "auray.pem", "auray.key"] {
        assert!(dir.path().join("out").join(f).exists(), "{f}");
    }
}

#[test]
fn expired_agent_certificate_is_refused() {
    let pki = Pki::new();
    let collector = Collector::spawn(&pki);
    let day = Duration::from_secs(86_400);
    let expired = pki.agent_with_validity(
        "old",
        Validity {
            not_before: SystemTime::now() - 30 * day,
            not_after: SystemTime::now() - day,
        },
    );
    let agent = Agent::spawn(&expired, &collector);
    agent.wait_log(
        "the server refused our certificate: received fatal alert: CertificateExpired",
        Duration::from_secs(10),
    );
    assert!(collector.agents().is_empty());
}

#[test]
fn collector_certificate_that_does_not_name_the_dialled_host_is_refused() {
    let pki = Pki::with_server_names(&["collector.example.net"]);
    let collector = Collector::spawn(&pki);
    let agent = Agent::spawn(&pki.agent("auray"), &collector);
    let log = agent.wait_log("cannot open a session", Duration::from_secs(10));
    assert!(log.contains("not valid for name"), "{log}");
    assert!(collector.agents().is_empty());
}

#[test]
fn agents_command_says_when_the_collector_is_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("nothing.sock");
    let (code, _, err) = run(
        "vigie-collector",
        &["agents", "--socket", sock.to_str().expect("utf-8")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the collector at") && err.contains("nothing.sock"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn connection_without_a_client_certificate_is_refused() {
    use tokio::io::AsyncReadExt;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, pki_types::ServerName};

    let pki = Pki::new();
    let collector = Collector::spawn(&pki);
    let mut roots = RootCertStore::empty();
    for c in vigie_certs::files::load_certs(&pki.files.ca_cert()).expect("ca") {
        roots.add(c).expect("root");
    }
    let config = ClientConfig::builder_with_provider(vigie_certs::tls::provider())
        .with_protocol_versions(&[&tokio_rustls::rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let err = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(collector.addr)
            .await
            .expect("tcp");
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let name = ServerName::try_from("127.0.0.1").expect("name");
        // TLS 1.3: the client's side of the handshake completes; the refusal is the reply.
        let mut tls = connector
            .connect(name, tcp)
            .await
            .expect("client handshake");
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.expect_err("refused")
    });
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    assert!(collector.agents().is_empty());
}

/// Runs `vigie-agent check-config` on a config for `creds`.
fn check_config(creds: &vigie_tests::Creds) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = agent_config(dir.path(), creds, &["127.0.0.1:5668".into()], "10s");
    run(
        "vigie-agent",
        &["check-config", "--config", path.to_str().expect("utf-8")],
    )
}

#[test]
fn check_config_finds_certificate_problems() {
    let pki = Pki::new();
    let good = pki.agent("auray");
    let (code, out, err) = check_config(&good);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("identity: agent \"auray\"") && out.trim_end().ends_with(": OK"),
        "{out}"
    );

    // A certificate of another CA.
    let other = Pki::new();
    let mut foreign = other.agent("auray");
    foreign.ca = good.ca.clone();
    let (code, _, err) = check_config(&foreign);
    assert_eq!(code, 64);
    assert!(
        err.contains("not valid with the CA of") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // Expired.
    let day = Duration::from_secs(86_400);
    let expired = pki.agent_with_validity(
        "old",
        Validity {
            not_before: SystemTime::now() - 30 * day,
            not_after: SystemTime::now() - day,
        },
    );
    let (code, _, err) = check_config(&expired);
    assert_eq!(code, 64);
    assert!(err.contains("certificate expired"), "{err}");

    // Somebody else's key, and an operator certificate: two problems, two lines.
    let op = pki.operator("alice");
    let mut mixed = op.clone();
    mixed.key = good.key.clone();
    let (code, _, err) = check_config(&mixed);
    assert_eq!(code, 64);
    assert_eq!(err.trim_end().lines().count(), 2, "{err}");
    assert!(
        err.contains("not an agent certificate") && err.contains("does not go with"),
        "{err}"
    );

    // A key others can read.
    std::fs::set_permissions(&good.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, _, err) = check_config(&good);
    assert_eq!(code, 64);
    assert!(
        err.contains("private key is readable by group or others"),
        "{err}"
    );
}

/// Peers that open the agent port and never start a TLS handshake are cut at the handshake
/// deadline (10 s); while they wait, agents still get in. (At 256 handshakes in flight and
/// std's backlog of 128, 300 such peers kept every agent out until they timed out.)
#[test]
fn idle_connections_on_the_agent_port_do_not_keep_agents_out() {
    use std::io::Read;
    let pki = Pki::new();
    let collector = Collector::spawn(&pki);
    let idle: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(collector.addr).expect("connect"))
        .collect();
    let creds = pki.agent("auray");
    let _agent = Agent::spawn(&creds, &collector);
    collector.wait_connected("auray", Duration::from_secs(8));
    for mut s in &idle {
        s.set_nonblocking(true).expect("nonblocking");
        match s.read(&mut [0u8; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("an idle peer was cut before the agent got in: {other:?}"),
        }
    }
}
