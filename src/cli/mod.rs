//! The `the-eye` command line: the clap tree's root, the dispatch, and what several
//! commands share. Each command group has its own file holding its arguments (the clap
//! derive, whose doc comments are the help texts) and its body: `serve` (serve, migrate,
//! healthcheck), `apps`, `keys`, `schemas`, `sessions`, `errors` (replay) and `erasure`
//! (erase). The library does the work; these files parse, call and print.

mod apps;
mod erasure;
mod errors;
mod keys;
mod schemas;
mod serve;
mod sessions;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use the_eye::devserver::DevServer;
use the_eye::store::Store;
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
        /// A throwaway instance for an application's test suite: an empty development
        /// ClickHouse in a temporary directory removed at exit, no spool, batches flushed
        /// every 50 ms (README, "Micro mode").
        #[arg(long)]
        micro: bool,
        /// With --micro: where to write the demo application's keys (`export` lines).
        #[arg(long, requires = "micro")]
        keys_file: Option<PathBuf>,
    },
    /// Apply pending ClickHouse migrations and exit.
    Migrate,
    /// Manage applications (the trusted clients that send events).
    #[command(subcommand)]
    Apps(apps::AppsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The tracking plan: payload schemas drawn from stored events.
    #[command(subcommand)]
    Schemas(schemas::SchemasCommand),
    /// Session summaries (the `sessions` table).
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// Work with rejected events (the `errors` table).
    #[command(subcommand)]
    Errors(errors::ErrorsCommand),
    /// Erase data from every table that holds event data (README, Erasure): one user's,
    /// one session's, a time range's (optionally of one event type), or one property path of
    /// one event type in a time range (`--redact`). Records it in the `erasures` ledger, runs
    /// it here to `done` or `failed`, and prints the ledger row as JSON.
    Erase(erasure::EraseArgs),
    /// Exit 0 if this instance (at `server.listen_addr`) answers `path` with 200: the
    /// container health check, since the runtime image has no curl.
    Healthcheck {
        /// Path to ask; `/readyz` means ClickHouse answers and the schema is current.
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
}

/// Parses the command line, loads the configuration and runs the command; the exit code is
/// 0 on success, 2 when the configuration does not load, 1 when the command fails.
pub async fn run() -> ExitCode {
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
        Command::Serve {
            no_migrate,
            micro,
            keys_file,
        } => {
            if no_migrate {
                config.clickhouse.migrate_on_start = false;
            }
            // Kept until `serve` returns (its ClickHouse stopped), then removed.
            let micro = match micro
                .then(|| the_eye::micro::MicroMode::prepare(&mut config, keys_file))
                .transpose()
            {
                Ok(micro) => micro,
                Err(error) => {
                    eprintln!("the-eye: {error}");
                    return ExitCode::from(2);
                }
            };
            let served = serve::serve(config).await;
            drop(micro);
            served
        }
        Command::Migrate => serve::migrate(config).await,
        Command::Apps(command) => apps::run(config, command).await,
        Command::Keys(command) => keys::run(config, command).await,
        Command::Schemas(schemas::SchemasCommand::Backtest(args)) => {
            let url = format!("http://{}", loopback(config.server.listen_addr));
            return match the_eye::backtest::cli::run(args, &url).await {
                Ok(answer) => {
                    println!("{answer:#}");
                    eprintln!("{}", the_eye::backtest::cli::summary(&answer));
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("schemas backtest: {message}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Schemas(command) => schemas::run(config, command).await,
        Command::Sessions(command) => sessions::run(config, command).await,
        Command::Errors(command) => return errors::run(&config, command).await,
        Command::Erase(args) => erasure::run(config, args).await,
        Command::Healthcheck { path } => {
            return match serve::healthcheck(config.server.listen_addr, &path) {
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
            // Once, on stderr, where the logs also go: a log line as well would say it twice.
            eprintln!("the-eye: {error}");
            ExitCode::FAILURE
        }
    }
}

/// ClickHouse with the schema applied, for the administrative commands.
pub(super) async fn admin_store(config: &Config) -> Result<(Store, Option<DevServer>), Error> {
    let (store, devserver) = the_eye::connect_shared(config).await?;
    the_eye::migrate(&store, Duration::from_secs(60)).await?;
    Ok((store, devserver))
}

/// Where to reach a server listening on `listen_addr` from this machine: the same address,
/// or loopback when it listens on every interface.
pub(super) fn loopback(listen_addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut address = listen_addr;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    address
}
