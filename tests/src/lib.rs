//! Builders for the integration tests.
