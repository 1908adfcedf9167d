//! The sample configs shipped in packaging/etc are valid and complete.

use std::path::Path;

fn sample(name: &str) -> (std::path::PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/etc")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("sample config");
    (path, text)
}

#[test]
fn agent_sample_parses_with_every_key_set() {
    let (path, text) = sample("agent.toml.sample");
    let c = vigie_agent::Config::from_toml(&path, &text).expect("agent sample is valid");
    assert_eq!(c.capture.interfaces, ["igb0", "igb1", "ovpnc1"]);
    assert_eq!(c.capture.max_bytes, 100_000_000);
    for key in [
        "collectors",
        "interval",
        "ca",
        "cert",
        "key",
        "interfaces",
        "max_duration",
        "max_bytes",
        "max_snaplen",
        "max_concurrent",
    ] {
        assert!(
            text.contains(&format!("\n{key} =")),
            "{key} is not documented"
        );
    }
}

#[test]
fn collector_sample_parses_with_every_key_set() {
    let (path, text) = sample("collector.toml.sample");
    let c = vigie_collector::Config::from_toml(&path, &text).expect("collector sample is valid");
    assert_eq!(c.listen.agents.port(), 5668);
    let nrpe = c.nrpe.expect("the sample has an [nrpe] section");
    assert_eq!(nrpe.agents["auray"].port(), 6001);
    // The sample's command table is the built-in default, spelled out.
    let defaults: std::collections::BTreeMap<String, String> =
        vigie_collector::config::DEFAULT_COMMANDS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    assert_eq!(nrpe.commands, defaults);
    for key in [
        "agents",
        "admin_socket",
        "ca",
        "cert",
        "key",
        "crl",
        "stale_after",
        "listen",
        "tls",
        "client_certs",
        "allowed_hosts",
        "allow_arguments",
        "connection_timeout",
    ] {
        assert!(
            text.contains(&format!("\n{key} =")),
            "{key} is not documented"
        );
    }
}
