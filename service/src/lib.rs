//! The `previewd` service: configuration, the HTTP endpoints, the GitHub adapter and the job
//! queue workers around the lifecycle engine in `previewd-environments`.

pub mod access;
pub mod admin;
pub mod cli;
pub mod config;
pub mod github;
pub mod http;
pub mod intake;
pub mod lifecycle;
pub mod metrics;
pub mod outbound;
pub mod process;
pub mod render;
pub mod retention;
pub mod server;
pub mod telemetry;
pub mod worker;
