//! vigie-agent: a small, dumb, safe reporter for one router.
//!
//! # Layout
//! - [`config`]: `agent.toml`, validated before anything is dialled.
//! - [`metrics`]: sampling the machine (filesystems, memory, swap, load, users, uptime).
//! - [`capture`]: captures on demand, bound by the agent's `[capture]` policy.
//! - [`preflight`]: `check-config`, everything that would stop the agent, before it runs.
//! - [`session`]: the dial-out loop: mutual TLS to the first reachable collector, Hello, a
//!   Report every interval, reconnection with jittered exponential backoff.
//!
//! The agent listens on nothing and never runs a command on anyone's behalf.

pub mod capture;
pub mod config;
pub mod metrics;
pub mod preflight;
pub mod session;

pub use config::Config;
pub use session::run;
