//! previewd's lifecycle engine: what an environment is, how its state may change, and the store
//! that keeps deliveries, jobs and environments durable.
//!
//! This crate knows nothing of HTTP or of GitHub's wire format; the `previewd` service translates
//! deliveries into [`model`] types before they reach it.

pub mod actions;
pub mod cluster;
pub mod dns;
pub mod forge;
pub mod hints;
pub mod kinds;
pub mod kube_client;
pub mod model;
pub mod naming;
pub mod planner;
pub mod policy;
pub mod quantity;
pub mod reconcile;
pub mod render;
pub mod repo_config;
pub mod spec;
pub mod store;
pub mod time;
pub mod usage;
pub mod yaml;
