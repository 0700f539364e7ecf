//! `the-eye schemas backtest FILE --category C --name N --since T`: the command line of a
//! backtest. It asks the running service (`POST /api/schemas/backtest`) with the admin key in
//! `THE_EYE_API_KEY`, so that the key's tenancy, the ingest rules in force and the bounds are
//! the service's own; it prints the answer as JSON on stdout and a one-line summary on stderr.
//!
//! Kept apart from `main.rs` (a clap [`BacktestArgs`] and [`run`]) so that the CLI's hook is
//! one variant and one match arm.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Arguments of `the-eye schemas backtest`.
#[derive(Debug, clap::Args)]
pub struct BacktestArgs {
    /// The candidate schema: a JSON Schema (draft 2020-12) file of the type's `data`, as it
    /// would be written in the schema directory.
    pub file: PathBuf,
    /// The event type's category, e.g. "page interaction".
    #[arg(long)]
    pub category: String,
    /// The event type's name, e.g. "pageview".
    #[arg(long)]
    pub name: String,
    /// Start of the window (RFC 3339): events by timestamp, rejections by receipt time.
    #[arg(long)]
    pub since: DateTime<Utc>,
    /// End of the window (RFC 3339, exclusive) [default: now]; at most 31 days after --since.
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Only this application's events and rejections (an application's key: its own, always).
    #[arg(long = "app")]
    pub app: Option<String>,
    /// Newest rows read per side (1 to 100000); a larger window is answered from a sample.
    #[arg(long, default_value_t = super::DEFAULT_LIMIT)]
    pub limit: u32,
    /// The service's base URL [default: http:// and `server.listen_addr`, where `serve`
    /// listens with the same configuration: http://127.0.0.1:8000 unless configured].
    #[arg(long, env = "THE_EYE_URL")]
    pub url: Option<String>,
}

/// Runs the backtest against the service at `args.url` (or `default_url`); the answer, or a
/// message that says what failed (an unreadable file, no key, no service, the service's error
/// code and message).
pub async fn run(args: BacktestArgs, default_url: &str) -> Result<Value, String> {
    let key = std::env::var("THE_EYE_API_KEY")
        .map_err(|_| "set THE_EYE_API_KEY to an admin key".to_owned())?;
    let text = std::fs::read_to_string(&args.file)
        .map_err(|error| format!("{}: {error}", args.file.display()))?;
    let schema: Value = serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text))
        .map_err(|error| format!("{}: not JSON: {error}", args.file.display()))?;
    let url = args.url.as_deref().unwrap_or(default_url);
    let endpoint = format!("{}/api/schemas/backtest", url.trim_end_matches('/'));
    let body = json!({
        "category": args.category, "name": args.name, "schema": schema,
        "application": args.app, "from": args.since, "to": args.until, "limit": args.limit,
    });
    let response = reqwest::Client::new()
        .post(&endpoint)
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .map_err(|error| {
            // reqwest's own text ("error sending request") hides the cause; the innermost
            // source says it ("Connection refused (os error 111)").
            let mut cause: &dyn std::error::Error = &error;
            while let Some(source) = cause.source() {
                cause = source;
            }
            if error.is_connect() {
                format!("{endpoint}: {cause}; is `the-eye serve` running at {url}? (set --url or THE_EYE_URL)")
            } else {
                format!("{endpoint}: {error}: {cause}")
            }
        })?;
    let status = response.status();
    let answer: Value = response
        .json()
        .await
        .map_err(|error| format!("{endpoint} answered {status}: {error}"))?;
    if !status.is_success() {
        return Err(format!("{endpoint} answered {status}: {answer}"));
    }
    Ok(answer)
}

/// The one line printed on stderr after the answer: what the candidate would do, and whether
/// it was a sample.
pub fn summary(answer: &Value) -> String {
    let accepted = &answer["accepted"];
    let rejected = &answer["rejected"];
    format!(
        "would reject {} of {} accepted events read and accept {} of {} rejections read (recover them with `the-eye errors replay` once it is in force); {}",
        accepted["would_reject"],
        accepted["read"],
        rejected["would_accept"],
        rejected["read"],
        answer["sampling"].as_str().unwrap_or("")
    )
}
