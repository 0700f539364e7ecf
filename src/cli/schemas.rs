//! `schemas infer`: draw a payload schema from stored events (the tracking plan).

use std::path::PathBuf;

use clap::Subcommand;
use the_eye::auth::admin::AdminError;
use the_eye::{Config, Error};

use super::admin_store;

#[derive(Subcommand)]
pub(super) enum SchemasCommand {
    /// Draw the JSON Schema (draft 2020-12) of one event type's `data` from its newest stored
    /// events; prints it, or writes it into a schema directory with --into.
    Infer {
        /// The event type's category, e.g. "page interaction".
        #[arg(long)]
        category: String,
        /// The event type's name, e.g. "pageview".
        #[arg(long)]
        name: String,
        /// Only events whose timestamp is at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events whose timestamp is before this RFC 3339 time.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events of this application.
        #[arg(long = "app")]
        app: Option<String>,
        /// Newest events to draw from (1 to 100000).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// `required` lists properties present in at least this share of objects (0 < s <= 1).
        #[arg(long, default_value_t = 0.99)]
        required_share: f64,
        /// Write the schema into this schema directory (e.g. schemas/) and add it to its
        /// index.json; then reload (POST /api/admin/schemas/reload).
        #[arg(long)]
        into: Option<PathBuf>,
    },
    /// What a candidate schema for one event type would have done to a window of traffic:
    /// the accepted events it would reject, the rejections it would accept (and a replay
    /// recover). Asks the running service with an admin key from THE_EYE_API_KEY.
    Backtest(the_eye::backtest::cli::BacktestArgs),
}

pub(super) async fn run(config: Config, command: SchemasCommand) -> Result<(), Error> {
    let SchemasCommand::Infer {
        category,
        name,
        since,
        until,
        app,
        limit,
        required_share,
        into,
    } = command
    else {
        // `cli::run` runs `schemas backtest` itself.
        return Err(AdminError::Invalid("`schemas backtest` is run by main".to_owned()).into());
    };
    if !(required_share > 0.0 && required_share <= 1.0) {
        return Err(AdminError::Invalid(format!(
            "--required-share must be greater than 0 and at most 1, not {required_share}"
        ))
        .into());
    }
    let (store, _devserver) = admin_store(&config).await?;
    let spec = the_eye::store::observed::SampleSpec {
        category,
        name,
        application: app,
        from: since,
        to: until,
        limit,
    };
    let limits = the_eye::plan::Limits {
        required_share,
        ..the_eye::plan::Limits::default()
    };
    let inferred = the_eye::plan::infer(&store, &spec, limits).await?;
    eprintln!(
        "drew the schema of ({:?}, {:?}) from {} of {} stored events",
        inferred.category, inferred.name, inferred.events_sampled, inferred.events_matching
    );
    match into {
        None => {
            println!(
                "{}",
                serde_json::to_string_pretty(&inferred.schema).expect("JSON values serialise")
            );
            eprintln!(
                "save it as <schema dir>/{} and add to index.json: {}",
                inferred.schema_file, inferred.index_entry
            );
        }
        Some(dir) => {
            let file = the_eye::plan::write_into(&dir, &inferred).map_err(AdminError::Invalid)?;
            eprintln!(
                "wrote {} and its entry in {}; reload to put it in force",
                file.display(),
                dir.join("index.json").display()
            );
        }
    }
    Ok(())
}
