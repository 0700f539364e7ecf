//! Administrative operations on applications and keys, shared by the CLI and first-run set-up.

use chrono::Utc;

use super::keys::{self, NewKey};
use super::Scope;
use crate::store::apps::{ApplicationRow, KeyRow};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("no application with id `{0}`")]
    NoSuchApplication(String),
    #[error("no key with prefix `{0}`")]
    NoSuchKey(String),
    #[error("an application with id `{0}` exists already")]
    ApplicationExists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `apps create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewApplication {
    pub name: String,
    /// Events per second; `None` uses the configured default.
    pub rate_per_second: Option<u32>,
    pub burst: Option<u32>,
    pub allowed_origins: Vec<String>,
}

/// The application's id: its name in lower case, with runs of anything but letters and digits
/// turned into `-`. Readable in every row, dashboard and metric label, and stable, since
/// names are not changed afterwards.
pub fn application_id(name: &str) -> String {
    let mut id = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c.to_ascii_lowercase());
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    id.trim_end_matches('-').chars().take(64).collect()
}

/// `scheme://host[:port]`, as browsers send it in `Origin`.
pub fn normalise_origin(origin: &str) -> Result<String, AdminError> {
    let origin = origin.trim().trim_end_matches('/');
    let (scheme, rest) = origin.split_once("://").ok_or_else(|| {
        AdminError::Invalid(format!(
            "origin `{origin}` must look like https://shop.example"
        ))
    })?;
    let valid = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' ']);
    if !valid {
        return Err(AdminError::Invalid(format!(
            "origin `{origin}` must be scheme://host[:port] with no path, like https://shop.example"
        )));
    }
    Ok(origin.to_ascii_lowercase())
}

fn positive(what: &str, value: Option<u32>) -> Result<u32, AdminError> {
    match value {
        None => Ok(0),
        Some(0) => Err(AdminError::Invalid(format!(
            "{what} must be greater than 0"
        ))),
        Some(value) => Ok(value),
    }
}

/// Registers an application and gives it a first key with the `ingest` scope.
pub async fn create_application(
    store: &Store,
    new: NewApplication,
) -> Result<(ApplicationRow, NewKey), AdminError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AdminError::Invalid(
            "the name must have 1 to 100 characters".to_owned(),
        ));
    }
    let id = application_id(name);
    if id.is_empty() {
        return Err(AdminError::Invalid(format!(
            "the name `{name}` has no letter or digit to make an id from"
        )));
    }
    let rate_per_second = positive("--rate", new.rate_per_second)?;
    let burst = positive("--burst", new.burst)?;
    let allowed_origins = new
        .allowed_origins
        .iter()
        .map(|origin| normalise_origin(origin))
        .collect::<Result<Vec<_>, _>>()?;
    if store.application(&id).await?.is_some() {
        return Err(AdminError::ApplicationExists(id));
    }
    let now = Utc::now();
    let application = ApplicationRow {
        application_id: id,
        name: name.to_owned(),
        created_at: now,
        updated_at: now,
        enabled: true,
        rate_per_second,
        burst,
        allowed_origins,
    };
    store.put_application(&application).await?;
    let (_, key) = create_key(store, &application.application_id, &[Scope::Ingest]).await?;
    Ok((application, key))
}

pub async fn set_enabled(
    store: &Store,
    id: &str,
    enabled: bool,
) -> Result<ApplicationRow, AdminError> {
    let mut application = store
        .application(id)
        .await?
        .ok_or_else(|| AdminError::NoSuchApplication(id.to_owned()))?;
    application.enabled = enabled;
    application.updated_at = Utc::now();
    store.put_application(&application).await?;
    Ok(application)
}

/// Creates a key for an existing application; the returned [`NewKey::key`] is the only copy.
pub async fn create_key(
    store: &Store,
    application_id: &str,
    scopes: &[Scope],
) -> Result<(KeyRow, NewKey), AdminError> {
    if scopes.is_empty() {
        return Err(AdminError::Invalid(
            "a key needs at least one scope".to_owned(),
        ));
    }
    if store.application(application_id).await?.is_none() {
        return Err(AdminError::NoSuchApplication(application_id.to_owned()));
    }
    let new = keys::generate();
    let now = Utc::now();
    let mut scope_names: Vec<String> = scopes
        .iter()
        .map(|scope| scope.as_str().to_owned())
        .collect();
    scope_names.sort();
    scope_names.dedup();
    let row = KeyRow {
        prefix: new.prefix.clone(),
        key_hash: new.hash.clone(),
        application_id: application_id.to_owned(),
        scopes: scope_names,
        created_at: now,
        updated_at: now,
        revoked_at: None,
    };
    store.put_key(&row).await?;
    Ok((row, new))
}

pub async fn revoke_key(store: &Store, prefix: &str) -> Result<KeyRow, AdminError> {
    let mut key = store
        .key(prefix)
        .await?
        .ok_or_else(|| AdminError::NoSuchKey(prefix.to_owned()))?;
    if key.revoked_at.is_none() {
        let now = Utc::now();
        key.revoked_at = Some(now);
        key.updated_at = now;
        store.put_key(&key).await?;
    }
    Ok(key)
}

/// Keys of the demo application created on first start, shown once.
#[derive(Debug)]
pub struct DemoKeys {
    pub application_id: String,
    pub ingest: NewKey,
    pub read: NewKey,
    pub admin: NewKey,
}

/// The application `demo` for newcomers: created once, with an ingest, a read and an admin
/// key. `None` when it exists already (its keys were shown when it was created).
pub async fn ensure_demo(
    store: &Store,
    origins: &[String],
) -> Result<Option<DemoKeys>, AdminError> {
    let new = NewApplication {
        name: "demo".to_owned(),
        allowed_origins: origins.to_vec(),
        ..NewApplication::default()
    };
    let (application, ingest) = match create_application(store, new).await {
        Ok(created) => created,
        Err(AdminError::ApplicationExists(_)) => return Ok(None),
        Err(error) => return Err(error),
    };
    let (_, read) = create_key(store, &application.application_id, &[Scope::Read]).await?;
    let (_, admin) = create_key(store, &application.application_id, &[Scope::Admin]).await?;
    Ok(Some(DemoKeys {
        application_id: application.application_id,
        ingest,
        read,
        admin,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_readable_slugs_of_names() {
        assert_eq!(application_id("Web Shop"), "web-shop");
        assert_eq!(application_id("  Billing / EU (prod) "), "billing-eu-prod");
        assert_eq!(application_id("!!!"), "");
    }

    #[test]
    fn origins_are_normalised_and_checked() {
        assert_eq!(
            normalise_origin("https://Shop.Example/").unwrap(),
            "https://shop.example"
        );
        assert_eq!(
            normalise_origin("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in ["shop.example", "ftp://x", "https://x/path", "https://"] {
            assert!(normalise_origin(bad).is_err(), "{bad}");
        }
    }
}
