//! Log lines about refused peers, bounded: a flood of bad connections (a port scan, a
//! thousand peers that never finish their handshake) must not become a flood of log lines.
//!
//! Each port logs its first [`BUDGET`] refusals of every [`WINDOW`] one by one, with peer and
//! reason; the rest are counted and summed up in one line when the window ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Refusals logged one by one per window and port.
pub const BUDGET: u32 = 20;
/// The length of a window.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RefusalLog {
    /// Names the port in the summary line ("agent", "NRPE").
    what: &'static str,
    seen: AtomicU32,
}

impl RefusalLog {
    /// A log for one port. Inside a tokio runtime, a task writes the summary of each window
    /// for as long as the log is in use.
    pub fn new(what: &'static str) -> Arc<RefusalLog> {
        let log = Arc::new(RefusalLog {
            what,
            seen: AtomicU32::new(0),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&log);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(WINDOW);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(log) => log.end_window(),
                        None => break,
                    };
                }
            });
        }
        log
    }

    /// Whether this refusal gets a line of its own; beyond the window's budget it is only
    /// counted.
    pub fn admit(&self) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed) < BUDGET
    }

    /// Ends a window: logs how many refusals went unlogged, and returns that number.
    pub fn end_window(&self) -> u32 {
        let unlogged = self.seen.swap(0, Ordering::Relaxed).saturating_sub(BUDGET);
        if unlogged > 0 {
            tracing::warn!(
                "refused {unlogged} more {} connections in the last {}s (only the first {BUDGET} are logged one by one)",
                self.what,
                WINDOW.as_secs()
            );
        }
        unlogged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_budget_one_by_one_then_counts() {
        let log = RefusalLog::new("test");
        let admitted = (0..BUDGET + 35).filter(|_| log.admit()).count();
        assert_eq!(admitted, BUDGET as usize);
        assert_eq!(log.end_window(), 35);
        // A new window has a full budget again, and a quiet window says nothing.
        assert!(log.admit());
        assert_eq!(log.end_window(), 0);
        assert_eq!(log.end_window(), 0);
    }
}
