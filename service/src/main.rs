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
        Command::Render(_) => Ok(()),
    }
}
