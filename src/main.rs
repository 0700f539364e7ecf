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
    /// Exit 0 if this instance (at `server.listen_addr`) answers `path` with 200: the
    /// container health check, since the runtime image has no curl.
    Healthcheck {
        /// Path to ask; `/readyz` means ClickHouse answers and the schema is current.
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
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
        Command::Healthcheck { path } => {
            return match healthcheck(config.server.listen_addr, &path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(reason) => {
                    eprintln!("the-eye healthcheck: {reason}");
                    ExitCode::FAILURE
                }
            };
        }
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

/// Asks `GET path` of the server listening on `listen_addr` (on loopback when it listens on
/// every interface) and succeeds on a 200, within 3 seconds.
fn healthcheck(listen_addr: std::net::SocketAddr, path: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut address = listen_addr;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = Duration::from_secs(3);
    let failed = |error: std::io::Error| format!("{address}: {error}");
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    stream.set_write_timeout(Some(timeout)).map_err(failed)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .map_err(failed)?;
    let mut head = Vec::new();
    stream.take(4096).read_to_end(&mut head).map_err(failed)?;
    let head = String::from_utf8_lossy(&head);
    let status_line = head.lines().next().unwrap_or("").trim();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!(
            "GET {path} from {address} answered `{status_line}`"
        )),
    }
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
