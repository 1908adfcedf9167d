//! The load generators of `bench/` against a real collector, small: the figures in
//! BENCHMARKS.md come from these tools, so they must keep doing what they say.

use std::time::Duration;

use vigie_tests::{Collector, Pki, nrpe_section, run, wait_until};

/// Twenty swarm agents, each with a certificate of its own, all show up in the fleet, and
/// the NRPE load generator gets their checks answered.
#[test]
fn swarm_agents_join_the_fleet_and_nrpe_load_gets_answers() {
    let pki = Pki::new();
    let collector = Collector::spawn_with(&pki, |c| c.nrpe = Some(nrpe_section()));
    let ca = pki.dir.path().join("ca");
    let mut swarm = std::process::Command::new(vigie_tests::bin("vigie-bench"))
        .args([
            "swarm",
            "--agents",
            "20",
            "--prefix",
            "bee",
            "--interval",
            "1s",
        ])
        .arg("--collector")
        .arg(collector.addr.to_string())
        .arg("--ca")
        .arg(&ca)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("vigie-bench swarm");
    let fleet = wait_until(Duration::from_secs(30), "20 swarm agents reporting", || {
        let agents = collector.agents();
        let reporting = agents
            .iter()
            .filter(|a| a.name.starts_with("bee-") && a.last_report.is_some())
            .count();
        (reporting == 20).then_some(agents)
    });
    assert!(fleet.iter().any(|a| a.name == "bee-00020"));
    let nrpe = collector.nrpe_addr(None).to_string();
    let (code, out, err) = run(
        "vigie-bench",
        &[
            "nrpe-load",
            "--addr",
            &nrpe,
            "--concurrency",
            "1,4",
            "--duration",
            "300ms",
            "--query",
            "check_load!bee-00007",
        ],
    );
    let _ = swarm.kill();
    let _ = swarm.wait();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        assert_eq!(l["errors"], 0, "{l}");
        assert!(l["n"].as_u64().unwrap_or(0) > 0, "{l}");
    }
}
