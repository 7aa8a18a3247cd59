use anyhow::Context;
use clap::Parser;
use previewd::cli::{Cli, Command};
use previewd::config::Config;
use previewd_environments::store::Store;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Render(args) = &cli.command {
        // A dry run needs no settings (no secret, no database).
        return previewd::render::run(args);
    }
    // Clients of a running previewd: its settings are the server's business.
    match cli.command {
        Command::Env { server, command } => return previewd::admin::env(&server, command).await,
        Command::Usage { server, from, to, group_by } => {
            return previewd::admin::usage(&server, from, to, &group_by).await;
        }
        Command::Limits { server } => return previewd::admin::limits(&server).await,
        Command::Bypass { server, command } => return previewd::admin::bypass(&server, command).await,
        Command::Share { server, command } => return previewd::admin::share(&server, command).await,
        _ => {}
    }
    let config = Config::load(cli.config.as_deref())?;
    previewd::telemetry::init(config.log_format, &config.log_filter);
    match cli.command {
        Command::Serve => previewd::server::serve(config).await,
        Command::Migrate => {
            let store = Store::connect(&config.database_url).await?;
            store.migrate().await.context("migrating the database")?;
            tracing::info!(backend = store.backend_name(), "database is up to date");
            Ok(())
        }
        Command::Token { command, output } => previewd::admin::token(&config, command, output).await,
        Command::Render(_)
        | Command::Env { .. }
        | Command::Usage { .. }
        | Command::Limits { .. }
        | Command::Bypass { .. }
        | Command::Share { .. } => Ok(()),
    }
}
