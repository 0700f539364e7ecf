//! `keys`: create, list and revoke API keys.

use clap::Subcommand;
use the_eye::auth::admin::{self, AdminError};
use the_eye::auth::Scope;
use the_eye::{Config, Error};

use super::admin_store;

#[derive(Subcommand)]
pub(super) enum KeysCommand {
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

pub(super) async fn run(config: Config, command: KeysCommand) -> Result<(), Error> {
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
