//! The `the-eye` command: parses the command line and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use the_eye::auth::admin::{self, AdminError, ApplicationUpdate, NewApplication};
use the_eye::auth::Scope;
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
    },
    /// Apply pending ClickHouse migrations and exit.
    Migrate,
    /// Manage applications (the trusted clients that send events).
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The tracking plan: payload schemas drawn from stored events.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Session summaries (the `sessions` table).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Work with rejected events (the `errors` table).
    #[command(subcommand)]
    Errors(ErrorsCommand),
    /// Erase data from every table that holds event data (README, Erasure): one user's,
    /// one session's, a time range's (optionally of one event type), or one property path of
    /// one event type in a time range (`--redact`). Records it in the `erasures` ledger, runs
    /// it here to `done` or `failed`, and prints the ledger row as JSON.
    Erase(EraseArgs),
    /// Exit 0 if this instance (at `server.listen_addr`) answers `path` with 200: the
    /// container health check, since the runtime image has no curl.
    Healthcheck {
        /// Path to ask; `/readyz` means ClickHouse answers and the schema is current.
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
}

#[derive(clap::Args)]
struct EraseArgs {
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

#[derive(Subcommand)]
enum AppsCommand {
    /// Register an application; prints its id and a new ingest key (shown once).
    Create {
        /// Human-readable name; the id is derived from it.
        #[arg(long)]
        name: String,
        /// Events per second (default: auth.default_rate_per_second).
        #[arg(long)]
        rate: Option<u32>,
        /// Events at once (default: auth.default_burst).
        #[arg(long)]
        burst: Option<u32>,
        /// Browser origin allowed to send events, e.g. https://shop.example (repeatable).
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// Days its events and rejections are kept (default: retention.events_days and
        /// retention.errors_days).
        #[arg(long)]
        retention_days: Option<u16>,
        /// Personal-data settings (issue 30).
        #[command(flatten)]
        privacy: the_eye::privacy::SettingsArgs,
    },
    /// List applications.
    List,
    /// Disable an application: all its keys stop working within auth.refresh_interval_ms.
    Disable { id: String },
    /// Enable a disabled application again.
    Enable { id: String },
    /// Change an application's name, rate, burst or origins; its id and keys stay.
    Update {
        id: String,
        /// New human-readable name (the id stays).
        #[arg(long)]
        name: Option<String>,
        /// Events per second; 0 returns to auth.default_rate_per_second.
        #[arg(long)]
        rate: Option<u32>,
        /// Events at once; 0 returns to auth.default_burst.
        #[arg(long)]
        burst: Option<u32>,
        /// Browser origin to allow, e.g. https://shop.example (repeatable).
        #[arg(long = "add-origin")]
        add_origins: Vec<String>,
        /// Browser origin to stop allowing (repeatable); it must be allowed now.
        #[arg(long = "remove-origin")]
        remove_origins: Vec<String>,
        /// Days its events and rejections are kept; 0 returns to the configured defaults.
        /// Applied to its stored rows too (a background mutation; expired rows go at the
        /// next TTL merge).
        #[arg(long)]
        retention_days: Option<u16>,
        /// Personal-data settings (issue 30).
        #[command(flatten)]
        privacy: the_eye::privacy::SettingsArgs,
    },
}

#[derive(Subcommand)]
enum SchemasCommand {
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
}

#[derive(Subcommand)]
enum SessionsCommand {
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

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; prints it once.
    Create {
        /// Application id: the key sends, reads and administers only this application.
        #[arg(long = "app", required_unless_present = "org", conflicts_with = "org")]
        app: Option<String>,
        /// An organisation key instead: bound to no application, it reads (`read`) and
        /// administers (`admin`) every application and the schema set; it cannot `ingest`.
        #[arg(long)]
        org: bool,
        /// Comma-separated scopes: ingest, read, admin.
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// List keys (prefixes, scopes, state; never the keys themselves).
    List {
        /// Only this application's keys.
        #[arg(long = "app", conflicts_with = "org")]
        app: Option<String>,
        /// Only the organisation keys.
        #[arg(long)]
        org: bool,
    },
    /// Revoke a key by its prefix (eye_xxxxxxxx).
    Revoke { prefix: String },
}

#[derive(Subcommand)]
enum ErrorsCommand {
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

/// glibc's allocator spent over a third of the service's CPU when batches of thousands of
/// rows (each a handful of small strings) are built and freed together; see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Apps(command) => apps(config, command).await,
        Command::Keys(command) => keys(config, command).await,
        Command::Schemas(command) => schemas(config, command).await,
        Command::Sessions(SessionsCommand::Backfill { since, until }) => {
            backfill_sessions(config, since, until).await
        }
        Command::Errors(ErrorsCommand::Replay {
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
        }) => {
            let body = serde_json::json!({
                "application": application, "code": code, "field": field,
                "category": category, "name": name, "from": from, "to": to,
                "dry_run": dry_run, "limit": page,
            });
            let url =
                url.unwrap_or_else(|| format!("http://{}", loopback(config.server.listen_addr)));
            return match replay_errors(&url, body).await {
                Ok(total) => {
                    println!("{total:#}");
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("errors replay: {message}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Erase(args) => erase(config, args).await,
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
            // Once, on stderr, where the logs also go: a log line as well would say it twice.
            eprintln!("the-eye: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), Error> {
    let listener = the_eye::bind("server.listen_addr", config.server.listen_addr).await?;
    the_eye::serve(config, listener, shutdown_signal()).await
}

async fn migrate(config: Config) -> Result<(), Error> {
    let (store, _devserver) = the_eye::connect_shared(&config).await?;
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

/// A rate or burst as stored, where 0 means the configured default.
fn or_default(value: u32) -> String {
    if value == 0 {
        "default".to_owned()
    } else {
        value.to_string()
    }
}

/// ClickHouse with the schema applied, for the administrative commands.
async fn admin_store(config: &Config) -> Result<(Store, Option<DevServer>), Error> {
    let (store, devserver) = the_eye::connect_shared(config).await?;
    the_eye::migrate(&store, Duration::from_secs(60)).await?;
    Ok((store, devserver))
}

async fn apps(config: Config, command: AppsCommand) -> Result<(), Error> {
    let (store, _devserver) = admin_store(&config).await?;
    match command {
        AppsCommand::Create {
            name,
            rate,
            burst,
            origins,
            retention_days,
            privacy,
        } => {
            let new = NewApplication {
                name,
                rate_per_second: rate,
                burst,
                allowed_origins: origins,
                retention_days,
                privacy: privacy.into(),
            };
            let (application, key) = admin::create_application(&store, new).await?;
            println!("created application `{}`", application.application_id);
            println!("ingest key (shown once; store it safely): {}", key.key);
        }
        AppsCommand::List => {
            println!(
                "{:<24} {:<24} {:<8} {:>8} {:>8}  origins",
                "id", "name", "enabled", "rate/s", "burst"
            );
            for app in store.applications().await? {
                // Escaped: rows may predate the checks on names and origins (issue 28).
                println!(
                    "{:<24} {:<24} {:<8} {:>8} {:>8}  {}",
                    admin::printable(&app.application_id),
                    admin::printable(&app.name),
                    app.enabled,
                    or_default(app.rate_per_second),
                    or_default(app.burst),
                    admin::printable(&app.allowed_origins.join(" "))
                );
            }
        }
        AppsCommand::Disable { id } => {
            admin::set_enabled(&store, &id, false).await?;
            println!(
                "disabled application `{id}`; its keys stop working within {} ms",
                config.auth.refresh_interval_ms
            );
        }
        AppsCommand::Enable { id } => {
            admin::set_enabled(&store, &id, true).await?;
            println!("enabled application `{id}`");
        }
        AppsCommand::Update {
            id,
            name,
            rate,
            burst,
            add_origins,
            remove_origins,
            retention_days,
            privacy,
        } => {
            let update = ApplicationUpdate {
                name,
                rate_per_second: rate,
                burst,
                add_origins,
                remove_origins,
                retention_days,
                privacy: privacy.into(),
            };
            if update == ApplicationUpdate::default() {
                return Err(AdminError::Invalid(
                    "nothing to change: give --name, --rate, --burst, --add-origin, --remove-origin, --retention-days, --url-query-allow or --pii-detector"
                        .to_owned(),
                )
                .into());
            }
            let app = admin::update_application(&store, &id, update, &config.retention).await?;
            println!(
                "updated application `{id}`: name `{}`, rate/s {}, burst {}, origins [{}]; \
                 every instance applies it within {} ms",
                admin::printable(&app.name),
                or_default(app.rate_per_second),
                or_default(app.burst),
                admin::printable(&app.allowed_origins.join(" ")),
                config.auth.refresh_interval_ms
            );
        }
    }
    Ok(())
}

async fn erase(config: Config, args: EraseArgs) -> Result<(), Error> {
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

async fn keys(config: Config, command: KeysCommand) -> Result<(), Error> {
    let (store, _devserver) = admin_store(&config).await?;
    match command {
        KeysCommand::Create { app, org, scopes } => {
            let scopes = scopes
                .iter()
                .map(|name| {
                    Scope::parse(name).ok_or_else(|| {
                        AdminError::Invalid(format!(
                            "unknown scope `{name}`; use ingest, read or admin"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (row, key, owner) = match app {
                Some(app) if !org => {
                    let (row, key) = admin::create_key(&store, &app, &scopes).await?;
                    (row, key, format!("`{app}`"))
                }
                _ => {
                    let (row, key) = admin::create_organisation_key(&store, &scopes).await?;
                    (row, key, "the organisation (every application)".to_owned())
                }
            };
            println!(
                "created key {} for {owner} with scopes {}",
                row.prefix,
                row.scopes.join(",")
            );
            println!("key (shown once; store it safely): {}", key.key);
        }
        KeysCommand::List { app, org } => {
            // Organisation keys are stored with an empty application id.
            let app = if org { Some(String::new()) } else { app };
            println!(
                "{:<14} {:<24} {:<20} {:<27} state",
                "prefix", "application", "scopes", "created"
            );
            for key in store.keys(app.as_deref()).await? {
                let state = match key.revoked_at {
                    Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M:%S")),
                    None => "active".to_owned(),
                };
                let owner = if key.application_id.is_empty() {
                    "(organisation)"
                } else {
                    &key.application_id
                };
                println!(
                    "{:<14} {:<24} {:<20} {:<27} {}",
                    admin::printable(&key.prefix),
                    admin::printable(owner),
                    admin::printable(&key.scopes.join(",")),
                    key.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    state
                );
            }
        }
        KeysCommand::Revoke { prefix } => {
            admin::revoke_key(&store, &prefix).await?;
            println!(
                "revoked key {prefix}; it stops working within {} ms",
                config.auth.refresh_interval_ms
            );
        }
    }
    Ok(())
}

async fn schemas(config: Config, command: SchemasCommand) -> Result<(), Error> {
    let SchemasCommand::Infer {
        category,
        name,
        since,
        until,
        app,
        limit,
        required_share,
        into,
    } = command;
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

/// Asks `GET path` of the server listening on `listen_addr` (on loopback when it listens on
/// every interface) and succeeds on a 200, within 3 seconds.
fn healthcheck(listen_addr: std::net::SocketAddr, path: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let address = loopback(listen_addr);
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

/// Where to reach a server listening on `listen_addr` from this machine: the same address,
/// or loopback when it listens on every interface.
fn loopback(listen_addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut address = listen_addr;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    address
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
