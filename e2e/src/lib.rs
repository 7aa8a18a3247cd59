//! Test support shared by previewd's test suites: access to the local Kubernetes control plane,
//! the DNS server, Postgres and the GitHub stand-in, each started by the scripts in `e2e/`.
//!
//! A service that is missing makes a test fail with a message saying how to start it; nothing
//! here skips a test.

pub mod cli;
pub mod cluster;
pub mod database;
pub mod dns;
pub mod fixtures;
pub mod fleet;
pub mod github;
pub mod helm;
pub mod markdown;
pub mod measure;
pub mod pod;
pub mod previewd;
pub mod proxy;
pub mod standin;
pub mod throttle;
