//! Integration tests: one binary, one module per topic.

mod bad_input;
mod capture;
mod nagios;
mod nrpe;
mod plugin;
mod sample;
mod samples;
mod session;
