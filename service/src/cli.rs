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
    /// Environments, through a running previewd's admin API (`--server`, a token).
    Env {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Environment-hours and requested CPU- and memory-hours per repository or owner, with the
    /// counts against each limit.
    Usage {
        #[command(flatten)]
        server: ServerArgs,
        /// Start of the period (RFC 3339; default 30 days before `--to`).
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// End of the period (RFC 3339; default now).
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
        /// `repository` or `owner`.
        #[arg(long, default_value = "repository")]
        group_by: String,
    },
    /// Live environments against each limit, waiters and the job queue.
    Limits {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Bypass tokens, which open a repository's protected previews for automation (header
    /// `x-previewd-bypass`), through a running previewd's admin API.
    Bypass {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: BypassCommand,
    },
    /// Share links, which open one environment's protected previews for someone outside GitHub
    /// until they expire, through a running previewd's admin API.
    Share {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: ShareCommand,
    },
    /// Admin API tokens, in previewd's database (run where previewd's settings are, e.g. with
    /// `kubectl exec` in its pod).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        /// `table` for people, `json` for scripts.
        #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
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

/// Where the admin API is and how to sign in to it.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// previewd's base URL.
    #[arg(long, global = true, env = "PREVIEWD_SERVER", default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub server: String,
    /// A file holding the API token (else `PREVIEWD_TOKEN`).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// `table` for people, `json` for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List environments, newest first.
    List {
        /// `owner/name`
        #[arg(long)]
        repository: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// Pending, Provisioning, Ready, Sleeping, Failed, Deleting, Deleted or Rejected.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        author: Option<String>,
        /// Only environments changed since this RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        updated_since: Option<String>,
        /// The most environments to show (all pages are read up to this many).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Keep running and print each change as it happens.
        #[arg(long)]
        watch: bool,
    },
    /// Show one environment with its history.
    Show { id: i64 },
    /// Move an environment's expiry later, like `2h` (within the policy's `ttl.max`).
    Extend { id: i64, duration: String },
    /// Deploy an environment's head commit again.
    Redeploy { id: i64 },
    /// Replace an environment's database with a new, empty one, seed it again, and deploy.
    ResetDb { id: i64 },
    /// Wake a sleeping environment.
    Wake { id: i64 },
    /// Tear an environment down now.
    Destroy { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum BypassCommand {
    /// Create a bypass token and print it (once: only its hash is stored).
    Create {
        /// `owner/name`
        #[arg(long)]
        repository: String,
        #[arg(long)]
        name: String,
    },
    /// List a repository's bypass tokens (never their secrets).
    List {
        /// `owner/name`
        #[arg(long)]
        repository: String,
    },
    /// Revoke a bypass token by name: visits with it are refused from then on.
    Revoke {
        /// `owner/name`
        #[arg(long)]
        repository: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShareCommand {
    /// Create a share link and print its URL (once: only its hash is stored).
    Create {
        /// The environment's id.
        id: i64,
        /// How long it opens the preview (`24h`, `30m`); the policy's `share_links.default`
        /// when not given, at most its `share_links.max`.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List an environment's share links (never their secrets).
    List { id: i64 },
    /// Revoke a share link by its id: visits with it are refused from then on.
    Revoke { id: i64, link: i64 },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        scope: Scope,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by name: it is refused from then on.
    Revoke { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// Read environments, usage and limits.
    Read,
    /// Also act on environments and read the audit log.
    Admin,
}
