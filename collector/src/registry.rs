//! The fleet: what the collector knows about each agent.
//!
//! One entry per identity (certificate common name), created at the agent's first session
//! and kept after it disconnects, so checks can say "disconnected since …". Each session gets
//! a number; only the current session of an agent may update or disconnect it, so a session
//! that was replaced cannot overwrite its successor's state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use vigie_proto::{AgentState, AgentStatus, CollectorMessage, Hello, Report};

/// How the registry reaches a live session.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u64,
    /// Commands for the agent (the session's outbound stream).
    pub commands: mpsc::Sender<Result<CollectorMessage, tonic::Status>>,
    /// Fired when a newer session replaces this one, or the certificate is revoked.
    pub kill: oneshot::Sender<&'static str>,
    /// Serial of the certificate the session was opened with.
    pub serial: String,
}

#[derive(Debug)]
struct Entry {
    session: Option<SessionHandle>,
    peer: Option<SocketAddr>,
    connected_since: Option<SystemTime>,
    disconnected_since: Option<SystemTime>,
    hello: Option<Hello>,
    last_report: Option<Report>,
    last_report_at: Option<SystemTime>,
}

/// The fleet, shared by the agent service and the admin API.
#[derive(Debug, Default)]
pub struct Registry {
    agents: Mutex<HashMap<String, Entry>>,
    next_session: std::sync::atomic::AtomicU64,
}

fn millis(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written (every update is
        // a plain field assignment), so a poisoned map is still good.
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new session for `name` and returns its number. A previous session of the
    /// same agent is told to close, and its peer address is returned for the log.
    pub fn connect(
        &self,
        name: &str,
        peer: Option<SocketAddr>,
        hello: Hello,
        commands: mpsc::Sender<Result<CollectorMessage, tonic::Status>>,
        serial: String,
    ) -> (
        u64,
        oneshot::Receiver<&'static str>,
        Option<Option<SocketAddr>>,
    ) {
        let id = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let (kill, killed) = oneshot::channel();
        let mut agents = self.lock();
        let entry = agents.entry(name.to_owned()).or_insert_with(|| Entry {
            session: None,
            peer: None,
            connected_since: None,
            disconnected_since: None,
            hello: None,
            last_report: None,
            last_report_at: None,
        });
        let replaced = entry.session.take().map(|old| {
            let _ = old
                .kill
                .send("replaced by a newer session of the same agent");
            entry.peer
        });
        entry.session = Some(SessionHandle {
            id,
            commands,
            kill,
            serial,
        });
        entry.peer = peer;
        entry.connected_since = Some(SystemTime::now());
        entry.disconnected_since = None;
        entry.hello = Some(hello);
        (id, killed, replaced)
    }

    /// Stores a report of session `id`; ignored if that session is no longer current.
    pub fn report(&self, name: &str, id: u64, report: Report) -> bool {
        let mut agents = self.lock();
        match agents.get_mut(name) {
            Some(e) if e.session.as_ref().is_some_and(|s| s.id == id) => {
                e.last_report = Some(report);
                e.last_report_at = Some(SystemTime::now());
                true
            }
            _ => false,
        }
    }

    /// Sends a command down the agent's current session.
    pub fn send(&self, name: &str, msg: CollectorMessage) -> Result<(), String> {
        let agents = self.lock();
        let session = agents
            .get(name)
            .and_then(|e| e.session.as_ref())
            .ok_or_else(|| format!("agent {name} is not connected"))?;
        session
            .commands
            .try_send(Ok(msg))
            .map_err(|_| format!("agent {name} is not reading its session"))
    }

    /// Marks the agent disconnected if `id` is still its current session.
    pub fn disconnect(&self, name: &str, id: u64) -> bool {
        let mut agents = self.lock();
        match agents.get_mut(name) {
            Some(e) if e.session.as_ref().is_some_and(|s| s.id == id) => {
                e.session = None;
                e.disconnected_since = Some(SystemTime::now());
                true
            }
            _ => false,
        }
    }

    /// Closes the sessions opened with any of these certificate serials; returns their names.
    pub fn kill_serials(&self, serials: &[String]) -> Vec<String> {
        self.kill_where(|s| serials.contains(&s.serial), "certificate revoked")
    }

    /// Closes every session (collector shutdown); returns how many there were.
    pub fn kill_all(&self, why: &'static str) -> usize {
        self.kill_where(|_| true, why).len()
    }

    fn kill_where(&self, pred: impl Fn(&SessionHandle) -> bool, why: &'static str) -> Vec<String> {
        let mut agents = self.lock();
        let mut killed = Vec::new();
        for (name, e) in agents.iter_mut() {
            if let Some(s) = e.session.take_if(|s| pred(s)) {
                let _ = s.kill.send(why);
                e.disconnected_since = Some(SystemTime::now());
                killed.push(name.clone());
            }
        }
        killed
    }

    /// A snapshot of every agent, sorted by name, with ages measured now.
    pub fn list(&self) -> Vec<AgentStatus> {
        let now = SystemTime::now();
        let agents = self.lock();
        let mut out: Vec<AgentStatus> = agents
            .iter()
            .map(|(name, e)| snapshot(name, e, now))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A snapshot of one agent, with ages measured now.
    pub fn status(&self, name: &str) -> Option<AgentStatus> {
        self.lock()
            .get(name)
            .map(|e| snapshot(name, e, SystemTime::now()))
    }
}

fn snapshot(name: &str, e: &Entry, now: SystemTime) -> AgentStatus {
    AgentStatus {
        name: name.to_owned(),
        state: if e.session.is_some() {
            AgentState::Connected
        } else {
            AgentState::Disconnected
        } as i32,
        connected_since_ms: millis(e.connected_since),
        disconnected_since_ms: millis(e.disconnected_since),
        peer_addr: e.peer.map(|p| p.to_string()).unwrap_or_default(),
        hello: e.hello.clone(),
        last_report: e.last_report.clone(),
        last_report_ms: millis(e.last_report_at),
        last_report_age_ms: e
            .last_report_at
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_session_cannot_touch_its_successor() {
        let r = Registry::new();
        let (tx, _rx) = mpsc::channel(1);
        let (first, killed_first, replaced) =
            r.connect("auray", None, Hello::default(), tx.clone(), "01".into());
        assert!(replaced.is_none());
        let (second, _killed, replaced) =
            r.connect("auray", None, Hello::default(), tx, "02".into());
        assert!(replaced.is_some());
        assert_eq!(
            killed_first.blocking_recv().ok(),
            Some("replaced by a newer session of the same agent")
        );
        assert!(!r.report("auray", first, Report::default()));
        assert!(!r.disconnect("auray", first));
        assert!(r.report("auray", second, Report::default()));
        let list = r.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, AgentState::Connected as i32);
        assert!(r.disconnect("auray", second));
        assert_eq!(r.list()[0].state, AgentState::Disconnected as i32);
    }
}
