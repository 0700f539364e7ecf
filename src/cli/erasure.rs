//! `erase`: record an erasure in the ledger and run it here to its end.

use std::time::Duration;

use the_eye::auth::admin::AdminError;
use the_eye::{Config, Error};

use super::admin_store;

#[derive(clap::Args)]
pub(super) struct EraseArgs {
    /// The application whose data is erased; leave out to erase from every application.
    #[arg(long)]
    app: Option<String>,
    /// Erase this user's events and rejections (`user_id`).
    #[arg(long, conflicts_with_all = ["session", "from", "redact"])]
    user: Option<String>,
    /// Erase this session's events and rejections.
    #[arg(long, conflicts_with_all = ["user", "from", "redact"])]
    session: Option<String>,
    /// Start of a time range (RFC 3339, inclusive) on the events' `timestamp`.
    #[arg(long, requires = "to")]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// End of the time range (exclusive).
    #[arg(long, requires = "from")]
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events of this category (with --name).
    #[arg(long, requires = "name")]
    category: Option<String>,
    /// Only events with this name (with --category).
    #[arg(long, requires = "category")]
    name: Option<String>,
    /// Instead of deleting the range's events of the type, remove this property of their
    /// `data` (dot-separated, e.g. form.last_name).
    #[arg(long, requires_all = ["from", "category"])]
    redact: Option<String>,
    /// Keep refusing the user's or session's new events at ingest.
    #[arg(long)]
    suppress: bool,
}

pub(super) async fn run(config: Config, args: EraseArgs) -> Result<(), Error> {
    use the_eye::erasure::{self, ErasureRequest, Selector, SubmitError, Suppressions};
    let selector = match (
        &args.user,
        &args.session,
        args.from.zip(args.to),
        &args.redact,
    ) {
        (Some(user_id), _, _, _) => Selector::User {
            user_id: user_id.clone(),
        },
        (_, Some(session_id), _, _) => Selector::Session {
            session_id: session_id.clone(),
        },
        (_, _, Some((from, to)), Some(path)) => Selector::Redact {
            from,
            to,
            category: args.category.clone().unwrap_or_default(),
            name: args.name.clone().unwrap_or_default(),
            property_path: path.clone(),
        },
        (_, _, Some((from, to)), None) => Selector::TimeRange {
            from,
            to,
            category: args.category.clone(),
            name: args.name.clone(),
        },
        _ => {
            return Err(AdminError::Invalid(
                "say what to erase: --user, --session, or --from and --to".to_owned(),
            )
            .into())
        }
    };
    let (store, _devserver) = admin_store(&config).await?;
    if let Some(app) = &args.app {
        if store.application(app).await?.is_none() {
            return Err(AdminError::Invalid(format!("no application `{app}`")).into());
        }
    }
    let request = ErasureRequest {
        application: args.app.clone(),
        selector,
        suppress: args.suppress,
        requested_by: "cli".to_owned(),
    };
    let row = erasure::submit(
        &store,
        &Suppressions::default(),
        &tokio::sync::Notify::new(),
        &request,
    )
    .await
    .map_err(|error| match error {
        SubmitError::Invalid(invalid) => Error::from(AdminError::Invalid(invalid.message)),
        SubmitError::Store(error) => error.into(),
    })?;
    eprintln!("erasure {} recorded; running it", row.erasure_id);
    let metrics = the_eye::metrics::Metrics::new(config.server.metrics_max_label_values);
    let settle = Duration::from_millis(config.clickhouse.insert_timeout_ms);
    let done = erasure::run(&store, &metrics, row, settle).await;
    println!(
        "{}",
        serde_json::json!({
            "erasure_id": done.erasure_id,
            "status": done.status,
            "reason": done.reason,
            "rows": {"events": done.rows_events, "errors": done.rows_errors,
                     "sessions": done.rows_sessions, "recoveries": done.rows_recoveries},
            "verification": done.verification,
        })
    );
    if done.status() != erasure::Status::Done {
        return Err(
            AdminError::Invalid(format!("the erasure did not complete: {}", done.reason)).into(),
        );
    }
    Ok(())
}
