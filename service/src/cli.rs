//! Command line.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// previewd: ephemeral preview environments on Kubernetes for GitHub pull requests.
///
/// Settings come from the defaults, then the config file, then PREVIEWD_* environment variables
/// (see the README's configuration reference).
#[derive(Debug, Parser)]
#[command(name = "previewd", version, about, long_about)]
pub struct Cli {
    /// Configuration file (TOML, or YAML with a .yaml/.yml extension).
    #[arg(long, short = 'c', global = true, env = "PREVIEWD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations, then serve webhooks and run the job queue until SIGTERM or
    /// SIGINT.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}
