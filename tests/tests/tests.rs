//! Integration tests: one binary, one module per topic.

mod bad_input;
mod bench;
mod capture;
mod freebsd;
mod nagios;
mod nrpe;
mod plugin;
mod sample;
mod samples;
mod session;
