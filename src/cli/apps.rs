//! `apps`: register, list, disable, enable and update applications.

use clap::Subcommand;
use the_eye::auth::admin::{self, AdminError, ApplicationUpdate, NewApplication};
use the_eye::{Config, Error};

use super::admin_store;

#[derive(Subcommand)]
pub(super) enum AppsCommand {
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

pub(super) async fn run(config: Config, command: AppsCommand) -> Result<(), Error> {
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

/// A rate or burst as stored, where 0 means the configured default.
fn or_default(value: u32) -> String {
    if value == 0 {
        "default".to_owned()
    } else {
        value.to_string()
    }
}
