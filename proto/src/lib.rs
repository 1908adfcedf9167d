//! The Vigie wire protocol, package `vigie.v1`.
//!
//! `AgentLink` is what agents dial (mutual TLS); `Admin` is what the operator CLI and the
//! `check_vigie` plugin call (unix socket, or mutual TLS with an operator certificate).
//! Fields are only ever added, never renumbered.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("vigie.v1");
}

pub use v1::*;

pub mod channel;
pub mod units;
