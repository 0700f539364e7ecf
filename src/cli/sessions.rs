//! `sessions backfill`: fold stored events into the `sessions` table.

use clap::Subcommand;
use the_eye::{Config, Error};

use super::admin_store;

#[derive(Subcommand)]
pub(super) enum SessionsCommand {
    /// Fold stored events into `sessions`, one day at a time: for events stored before
    /// migration 5 created the view that keeps it. Idempotent, and safe while events arrive.
    Backfill {
        /// Only events whose timestamp is at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events whose timestamp is before this RFC 3339 time.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
}

/// Runs a `sessions` subcommand.
pub(super) async fn run(config: Config, command: SessionsCommand) -> Result<(), Error> {
    match command {
        SessionsCommand::Backfill { since, until } => backfill_sessions(config, since, until).await,
    }
}

async fn backfill_sessions(
    config: Config,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), Error> {
    let (store, _devserver) = admin_store(&config).await?;
    let folded = store
        .backfill_sessions(since, until, |day, events| {
            if events > 0 {
                eprintln!("{}: folded {events} events", day.format("%Y-%m-%d"));
            }
        })
        .await?;
    println!("folded {folded} events into sessions");
    Ok(())
}
