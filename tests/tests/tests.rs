//! Integration tests: one binary, one module per topic.

mod bad_input;
mod nrpe;
mod plugin;
mod sample;
mod samples;
mod session;
