//! The `the-eye` command: parses the command line and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use the_eye::{Config, Error};

#[derive(Parser)]
#[command(
    name = "the-eye",
    version,
    about = "Collects user-behaviour events into ClickHouse"
)]
struct Cli {
    /// TOML configuration file; environment variables THE_EYE_* override it.
    #[arg(long, global = true, env = "THE_EYE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (applies migrations first unless told not to).
    Serve {
        /// Do not apply migrations at start; /readyz reports a stale schema.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending ClickHouse migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("the-eye: {error}");
            return ExitCode::from(2);
        }
    };
    the_eye::telemetry::init(&config.server);
    let result = match cli.command {
        Command::Serve { no_migrate } => {
            if no_migrate {
                config.clickhouse.migrate_on_start = false;
            }
            serve(config).await
        }
        Command::Migrate => migrate(config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the-eye failed");
            eprintln!("the-eye: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(config.server.listen_addr).await?;
    the_eye::serve(config, listener, shutdown_signal()).await
}

async fn migrate(config: Config) -> Result<(), Error> {
    let (store, _devserver) = the_eye::connect(&config).await?;
    let applied = the_eye::migrate(&store, Duration::from_secs(60)).await?;
    if applied.is_empty() {
        println!("database `{}` is up to date", store.database());
    } else {
        println!(
            "database `{}`: applied migrations {applied:?}",
            store.database()
        );
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
