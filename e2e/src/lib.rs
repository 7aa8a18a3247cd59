//! Test support shared by previewd's test suites: access to the local Kubernetes control plane,
//! the DNS server, Postgres and the GitHub stand-in, each started by the scripts in `e2e/`.

pub mod cluster;
