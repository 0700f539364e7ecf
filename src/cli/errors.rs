//! `errors replay`: have a running service validate matching rejections again.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use the_eye::Config;

use super::loopback;

#[derive(Subcommand)]
pub(super) enum ErrorsCommand {
    /// Validate matching rejections again with today's rules and schemas and store those that
    /// pass, each once, with its original time. Asks the running service (its pipeline and
    /// spool store the events) with an admin key from THE_EYE_API_KEY, page after page, and
    /// prints the summed outcome as JSON.
    Replay {
        /// The service's base URL [default: http:// and `server.listen_addr`, where `serve`
        /// listens with the same configuration: http://127.0.0.1:8000 unless configured].
        #[arg(long, env = "THE_EYE_URL")]
        url: Option<String>,
        /// Only this application's rejections (an application's key: its own, always).
        #[arg(long = "app")]
        application: Option<String>,
        /// Only rejections with a problem of this code, e.g. required (a payload schema's
        /// `required` keyword) or missing_field.
        #[arg(long)]
        code: Option<String>,
        /// Only rejections with a problem at this field (with --code: the same problem).
        #[arg(long)]
        field: Option<String>,
        /// Only rejections of this event category.
        #[arg(long)]
        category: Option<String>,
        /// Only rejections of this event name.
        #[arg(long)]
        name: Option<String>,
        /// Received at or after this RFC 3339 time.
        #[arg(long)]
        from: Option<String>,
        /// Received before this RFC 3339 time.
        #[arg(long)]
        to: Option<String>,
        /// Count the outcomes; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rejections per call (1 to 1000).
        #[arg(long, default_value_t = 1000)]
        page: u32,
    },
}

/// Runs an `errors` subcommand; prints the outcome as JSON, or the failure on stderr.
pub(super) async fn run(config: &Config, command: ErrorsCommand) -> ExitCode {
    let ErrorsCommand::Replay {
        url,
        application,
        code,
        field,
        category,
        name,
        from,
        to,
        dry_run,
        page,
    } = command;
    let body = serde_json::json!({
        "application": application, "code": code, "field": field,
        "category": category, "name": name, "from": from, "to": to,
        "dry_run": dry_run, "limit": page,
    });
    let url = url.unwrap_or_else(|| format!("http://{}", loopback(config.server.listen_addr)));
    match replay_errors(&url, body).await {
        Ok(total) => {
            println!("{total:#}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("errors replay: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Calls `POST /api/admin/errors/replay` until no page is left and sums the outcomes. A 503
/// (the pipeline is full) is waited out as `Retry-After` says, a few times.
async fn replay_errors(
    url: &str,
    mut body: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let key = std::env::var("THE_EYE_API_KEY")
        .map_err(|_| "set THE_EYE_API_KEY to an admin key".to_owned())?;
    let endpoint = format!("{}/api/admin/errors/replay", url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let mut total = serde_json::json!({
        "dry_run": body["dry_run"], "selected": 0, "recovered": 0, "still_rejected": {},
        "not_recoverable": 0, "already_recovered": 0,
    });
    let mut waits = 0;
    loop {
        let response = client
            .post(&endpoint)
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .map_err(|error| {
                // reqwest's own text ("error sending request") hides the cause; the
                // innermost source says it ("Connection refused (os error 111)").
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
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && waits < 10 {
            waits += 1;
            let seconds = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok()?.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            continue;
        }
        let answer: serde_json::Value = response
            .json()
            .await
            .map_err(|error| format!("{endpoint} answered {status}: {error}"))?;
        if !status.is_success() {
            return Err(format!("{endpoint} answered {status}: {answer}"));
        }
        for count in [
            "selected",
            "recovered",
            "not_recoverable",
            "already_recovered",
        ] {
            total[count] =
                (total[count].as_u64().unwrap_or(0) + answer[count].as_u64().unwrap_or(0)).into();
        }
        if let Some(codes) = answer["still_rejected"].as_object() {
            for (code, count) in codes {
                let sum = total["still_rejected"][code].as_u64().unwrap_or(0)
                    + count.as_u64().unwrap_or(0);
                total["still_rejected"][code] = sum.into();
            }
        }
        match answer.get("next").filter(|next| !next.is_null()) {
            Some(next) => body["after"] = next.clone(),
            None => return Ok(total),
        }
    }
}
