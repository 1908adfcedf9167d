//! Integration tests: one binary, one module per topic.

mod bad_input;
mod sample;
mod samples;
mod session;
