//! The operator commands: `ca init|issue|revoke`, `agents` and `capture`.
//!
//! Each returns what to print; `main.rs` maps errors to exit codes.

pub mod capture;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use vigie_certs::{CaFiles, Role};
use vigie_proto::{AgentState, AgentStatus, ListAgentsRequest};

/// `ca init`: a new CA and the collector's certificate.
pub fn ca_init(dir: &Path, server_names: &[String]) -> Result<String, vigie_certs::Error> {
    let files = CaFiles::new(dir);
    files.init(server_names)?;
    Ok(format!(
        "created a Vigie CA in {dir}\n  \
         {ca} (give to agents and operators)\n  \
         {key} (the CA key: keep it secret)\n  \
         {cert} + collector.key (the collector's certificate, valid for {names})\n\
         next: vigie-collector ca issue --dir {dir} --agent NAME --out DIR\n",
        dir = dir.display(),
        ca = files.ca_cert().display(),
        key = files.ca_key().display(),
        cert = files.collector_cert().display(),
        names = server_names.join(", "),
    ))
}

/// `ca issue`: an agent or operator certificate.
pub fn ca_issue(dir: &Path, role: &Role, out: &Path) -> Result<String, vigie_certs::Error> {
    let issued = CaFiles::new(dir).issue_into(role, out)?;
    Ok(format!(
        "issued {kind} certificate {name:?} (serial {serial})\n  {cert}\n  {key}\n  {ca}\n",
        kind = role.kind(),
        name = role.name(),
        serial = issued.serial,
        cert = issued.cert.display(),
        key = issued.key.display(),
        ca = issued.ca.display(),
    ))
}

/// `ca revoke`: every certificate issued to `name`.
pub fn ca_revoke(dir: &Path, name: &str) -> Result<String, vigie_certs::Error> {
    let files = CaFiles::new(dir);
    let serials = files.revoke(name)?;
    Ok(if serials.is_empty() {
        format!("every certificate of {name:?} was already revoked\n")
    } else {
        format!(
            "revoked {name:?} (serial {}); {} updated: a running collector refuses it within seconds\n",
            serials.join(", "),
            files.crl().display()
        )
    })
}

/// The fleet, from the collector's admin socket.
async fn fetch_agents(socket: &Path) -> anyhow::Result<Vec<AgentStatus>> {
    let mut client = crate::admin::connect(socket).await?;
    Ok(client
        .list_agents(ListAgentsRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("the collector refused: {}", s.message()))?
        .into_inner()
        .agents)
}

/// `agents --interfaces AGENT`: what the agent can capture on.
pub async fn interfaces(socket: &Path, agent: &str) -> anyhow::Result<String> {
    let list = fetch_agents(socket).await?;
    let a = list.iter().find(|a| a.name == agent).ok_or_else(|| {
        anyhow::anyhow!("no agent named {agent:?} has connected to this collector")
    })?;
    let hello = a.hello.clone().unwrap_or_default();
    if !hello.capabilities.iter().any(|c| c == "capture") {
        return Ok(format!(
            "{agent} cannot capture (no libpcap, or not allowed to open interfaces)\n"
        ));
    }
    let mut out = format!(
        "{:<16} {:<12} {:<8} ADDRESSES\n",
        "INTERFACE", "LINK TYPE", "POLICY"
    );
    for i in &hello.interfaces {
        let link = if i.link_type_name.is_empty() {
            "-".to_owned()
        } else {
            i.link_type_name.clone()
        };
        let policy = if i.allowed { "allowed" } else { "refused" };
        let _ = writeln!(
            out,
            "{:<16} {:<12} {policy:<8} {}",
            i.name,
            link,
            i.addresses.join(" ")
        );
    }
    Ok(out)
}

/// `agents`: the fleet as a table or JSON.
pub async fn agents(socket: &Path, json: bool) -> anyhow::Result<String> {
    let list = fetch_agents(socket).await?;
    if json {
        Ok(serde_json::to_string_pretty(&list.iter().map(json_row).collect::<Vec<_>>())? + "\n")
    } else {
        Ok(table(&list))
    }
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// The summary figures of one agent's last report.
struct Figures {
    load1: Option<f64>,
    mem_used: Option<f64>,
    root_used: Option<f64>,
}

fn figures(a: &AgentStatus) -> Figures {
    let r = a.last_report.as_ref();
    Figures {
        load1: r.and_then(|r| r.load.as_ref()).map(|l| l.load1),
        mem_used: r
            .and_then(|r| r.memory.as_ref())
            .and_then(|m| percent(m.used_bytes, m.total_bytes)),
        // Like df's Use%: used / (used + available), so reserved blocks count as full.
        root_used: r
            .and_then(|r| r.filesystems.iter().find(|f| f.mount_point == "/"))
            .and_then(|f| percent(f.used_bytes, f.used_bytes.saturating_add(f.available_bytes))),
    }
}

fn state(a: &AgentStatus) -> &'static str {
    if a.state == AgentState::Connected as i32 {
        "connected"
    } else {
        "disconnected"
    }
}

/// A short age: "4s", "12m", "3h", "2d".
pub fn short_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn json_row(a: &AgentStatus) -> serde_json::Value {
    let f = figures(a);
    let hello = a.hello.clone().unwrap_or_default();
    serde_json::json!({
        "name": a.name,
        "state": state(a),
        "address": a.peer_addr,
        "version": hello.agent_version,
        "hostname": hello.hostname,
        "os": format!("{} {}", hello.os_name, hello.os_version),
        "distribution": hello.distribution,
        "connected_since_ms": a.connected_since_ms,
        "disconnected_since_ms": a.disconnected_since_ms,
        "last_report_ms": a.last_report_ms,
        "last_report_age_s": a.last_report.as_ref().map(|_| a.last_report_age_ms as f64 / 1000.0),
        "load1": f.load1,
        "mem_used_pct": f.mem_used,
        "root_used_pct": f.root_used,
        "report": a.last_report,
    })
}

/// The `agents` table: one row per agent.
pub fn table(list: &[AgentStatus]) -> String {
    let header = [
        "NAME", "STATE", "AGE", "ADDRESS", "VERSION", "LOAD1", "MEM%", "ROOT%",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|a| {
            let f = figures(a);
            [
                a.name.clone(),
                state(a).to_owned(),
                a.last_report.as_ref().map_or_else(dash, |_| {
                    short_age(Duration::from_millis(a.last_report_age_ms))
                }),
                if a.peer_addr.is_empty() {
                    dash()
                } else {
                    a.peer_addr.clone()
                },
                a.hello
                    .as_ref()
                    .map_or_else(dash, |h| h.agent_version.clone()),
                f.load1.map_or_else(dash, |v| format!("{v:.2}")),
                f.mem_used.map_or_else(dash, |v| format!("{v:.1}")),
                f.root_used.map_or_else(dash, |v| format!("{v:.1}")),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Text left, figures right.
            if i >= 5 {
                let _ = write!(l, "{cell:>w$}  ");
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    if list.is_empty() {
        out.push_str("(no agent has connected yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_proto::{Filesystem, Hello, Load, Memory, Report};

    #[test]
    fn table_shows_figures_and_dashes() {
        let up = AgentStatus {
            name: "auray".into(),
            state: AgentState::Connected as i32,
            peer_addr: "10.8.0.6:40112".into(),
            hello: Some(Hello {
                agent_version: "0.1.0".into(),
                ..Hello::default()
            }),
            last_report: Some(Report {
                load: Some(Load {
                    load1: 0.5,
                    ..Load::default()
                }),
                memory: Some(Memory {
                    total_bytes: 1000,
                    used_bytes: 250,
                    available_bytes: 750,
                }),
                filesystems: vec![Filesystem {
                    mount_point: "/".into(),
                    used_bytes: 30,
                    available_bytes: 70,
                    total_bytes: 110,
                    ..Filesystem::default()
                }],
                ..Report::default()
            }),
            last_report_age_ms: 4_200,
            ..AgentStatus::default()
        };
        let down = AgentStatus {
            name: "brest".into(),
            state: AgentState::Disconnected as i32,
            ..AgentStatus::default()
        };
        let t = table(&[up, down]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "auray",
                "connected",
                "4s",
                "10.8.0.6:40112",
                "0.1.0",
                "0.50",
                "25.0",
                "30.0"
            ]
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells,
            ["brest", "disconnected", "-", "-", "-", "-", "-", "-"]
        );
    }

    #[test]
    fn ages() {
        assert_eq!(short_age(Duration::from_secs(59)), "59s");
        assert_eq!(short_age(Duration::from_secs(600)), "10m");
        assert_eq!(short_age(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(short_age(Duration::from_secs(3 * 86_400)), "3d");
    }
}
