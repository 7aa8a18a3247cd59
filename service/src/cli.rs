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
    /// Print the Kubernetes objects previewd would apply for a pull request, without touching a
    /// cluster: the platform team's way to try a template or policy change. Secrets are not
    /// printed (their values never leave the cluster).
    Render(RenderArgs),
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The platform policy (YAML).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// The repository's `.preview.yaml`.
    #[arg(long, value_name = "FILE")]
    pub repo_config: PathBuf,
    /// Template folder (holding `environments/<set>/`).
    #[arg(long, value_name = "DIR", default_value = "templates")]
    pub templates: PathBuf,
    /// Repository as `owner/name`.
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: String,
    /// The repository's GitHub id (names the environment; any number for a dry run).
    #[arg(long, default_value_t = 1)]
    pub repo_id: i64,
    /// Pull request number.
    #[arg(long)]
    pub pr: i64,
    /// Head commit SHA.
    #[arg(long, default_value = "0000000000000000000000000000000000000000")]
    pub sha: String,
}
