//! Administrative operations on applications and keys, shared by the CLI, the admin API and
//! first-run set-up. Who may call which is decided by the caller (the CLI runs as the
//! operator; the admin API checks the key, see `api::admin`).

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
    /// Days its events and rejections are kept; `None` (or 0) uses the configured defaults.
    pub retention_days: Option<u16>,
    /// Personal-data settings (issue 30, docs/personal-data.md); `None` keeps the defaults.
    pub privacy: crate::privacy::SettingsUpdate,
}

/// The application's id: its name in lower case, with runs of anything but letters and digits
/// turned into `-`. Readable in every row, dashboard and metric label; it stays when the name
/// is changed later ([`update_application`]), since rows and keys refer to it.
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

const MAX_ORIGIN_BYTES: usize = 300;

/// Origins one application may allow: enough for every site of a real application, and a
/// bound on what a registry refresh carries.
pub const MAX_ORIGINS: usize = 100;

/// `scheme://host[:port]`, as browsers send it in `Origin`.
pub fn normalise_origin(origin: &str) -> Result<String, AdminError> {
    let origin = origin.trim().trim_end_matches('/');
    // Longer than any real origin (a host name has at most 253 characters); not quoted back.
    if origin.len() > MAX_ORIGIN_BYTES {
        return Err(AdminError::Invalid(format!(
            "an origin must be at most {MAX_ORIGIN_BYTES} bytes"
        )));
    }
    let (scheme, rest) = origin.split_once("://").ok_or_else(|| {
        AdminError::Invalid(format!(
            "origin `{}` must look like https://shop.example",
            printable(origin)
        ))
    })?;
    // Browsers send `Origin` in ASCII (a host with other letters as punycode, `xn--…`), so
    // anything else — control characters (a newline, ESC, NUL) above all, which could forge
    // rows or terminal escapes where origins are printed — can never match and is refused.
    if !origin.chars().all(|c| c.is_ascii_graphic()) {
        return Err(AdminError::Invalid(format!(
            "origin `{}` must be printable ASCII with no spaces or control characters (write              an international host name as punycode, xn--…)",
            printable(origin)
        )));
    }
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

fn check_origin_count(origins: &[String]) -> Result<(), AdminError> {
    if origins.len() > MAX_ORIGINS {
        return Err(AdminError::Invalid(format!(
            "an application may allow at most {MAX_ORIGINS} origins"
        )));
    }
    Ok(())
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
    let (application, _, key) = create_application_with_key(store, new).await?;
    Ok((application, key))
}

/// [`create_application`], also returning the stored row of the first key (for answers
/// that describe it without reading it back).
pub async fn create_application_with_key(
    store: &Store,
    new: NewApplication,
) -> Result<(ApplicationRow, KeyRow, NewKey), AdminError> {
    let name = checked_name(&new.name)?;
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
    check_origin_count(&allowed_origins)?;
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
        retention_days: new.retention_days.unwrap_or(0),
        url_query_allowlist: crate::privacy::url::DEFAULT_ALLOWLIST
            .iter()
            .map(|entry| (*entry).to_owned())
            .collect(),
        pii_detector: crate::privacy::DetectorPolicy::default()
            .as_str()
            .to_owned(),
    };
    let mut application = application;
    new.privacy
        .apply_to(&mut application)
        .map_err(AdminError::Invalid)?;
    store.put_application(&application).await?;
    let (row, key) = create_key(store, &application.application_id, &[Scope::Ingest]).await?;
    Ok((application, row, key))
}

async fn existing(store: &Store, id: &str) -> Result<ApplicationRow, AdminError> {
    store
        .application(id)
        .await?
        .ok_or_else(|| AdminError::NoSuchApplication(id.to_owned()))
}

pub async fn set_enabled(
    store: &Store,
    id: &str,
    enabled: bool,
) -> Result<ApplicationRow, AdminError> {
    let mut application = existing(store, id).await?;
    application.enabled = enabled;
    application.updated_at = Utc::now();
    store.put_application(&application).await?;
    Ok(application)
}

/// Changes to an application; `None` and empty lists leave a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplicationUpdate {
    /// The new name; the id stays.
    pub name: Option<String>,
    /// Events per second; `Some(0)` returns to the configured default.
    pub rate_per_second: Option<u32>,
    /// Events at once; `Some(0)` returns to the configured default.
    pub burst: Option<u32>,
    /// Origins to allow besides those allowed now.
    pub add_origins: Vec<String>,
    /// Origins to stop allowing; each must be allowed now.
    pub remove_origins: Vec<String>,
    /// Days its events and rejections are kept; `Some(0)` returns to the configured
    /// defaults. Applied to the rows stored already too (see [`update_application`]).
    pub retention_days: Option<u16>,
    /// Personal-data settings (issue 30); `None` fields leave a setting as it is. Applies to
    /// events that arrive after the change only.
    pub privacy: crate::privacy::SettingsUpdate,
}

fn checked_name(name: &str) -> Result<&str, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AdminError::Invalid(
            "the name must have 1 to 100 characters".to_owned(),
        ));
    }
    // A name is shown to operators (`apps list`, dashboards): a newline, ESC or NUL in it
    // could forge rows or terminal escapes there (issue 28).
    if name.chars().any(unprintable) {
        return Err(AdminError::Invalid(format!(
            "the name `{}` has a control character; use letters, digits, spaces and punctuation",
            printable(name)
        )));
    }
    Ok(name)
}

/// Characters that change how a terminal or a table shows what follows rather than showing
/// themselves: control characters (`\n`, ESC, NUL, …) and the bidirectional overrides and
/// isolates (U+202A–U+202E, U+2066–U+2069), which reorder a line.
fn unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every [`unprintable`] character written as a Rust escape (`\n`, `\u{1b}`):
/// what the CLI prints of values read from the database, and what refusals quote, so that
/// a row written before names were checked (or straight into ClickHouse) cannot forge output.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(unprintable) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unprintable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Applies `update` to the application `id` as one new version of its row; the registry of
/// every instance sees it within `auth.refresh_interval_ms`, and the application's keys stay
/// valid. Removing an origin that is not allowed is refused, so that a typo is not silently
/// a no-op.
pub async fn update_application(
    store: &Store,
    id: &str,
    update: ApplicationUpdate,
    defaults: &crate::config::RetentionConfig,
) -> Result<ApplicationRow, AdminError> {
    let mut application = existing(store, id).await?;
    if let Some(name) = &update.name {
        application.name = checked_name(name)?.to_owned();
    }
    if let Some(rate) = update.rate_per_second {
        application.rate_per_second = rate;
    }
    if let Some(burst) = update.burst {
        application.burst = burst;
    }
    for origin in &update.remove_origins {
        let origin = normalise_origin(origin)?;
        let before = application.allowed_origins.len();
        application
            .allowed_origins
            .retain(|allowed| *allowed != origin);
        if application.allowed_origins.len() == before {
            return Err(AdminError::Invalid(format!(
                "origin `{origin}` is not allowed for `{id}`, so it cannot be removed"
            )));
        }
    }
    for origin in &update.add_origins {
        let origin = normalise_origin(origin)?;
        if !application.allowed_origins.contains(&origin) {
            application.allowed_origins.push(origin);
        }
    }
    check_origin_count(&application.allowed_origins)?;
    let retention_changed = update
        .retention_days
        .is_some_and(|days| days != application.retention_days);
    if let Some(days) = update.retention_days {
        application.retention_days = days;
    }
    update
        .privacy
        .apply_to(&mut application)
        .map_err(AdminError::Invalid)?;
    application.updated_at = Utc::now();
    store.put_application(&application).await?;
    if retention_changed {
        let resolved =
            crate::store::rows::RowRetention::resolve(defaults, application.retention_days);
        store
            .apply_retention_days(id, resolved.events_days, resolved.errors_days)
            .await?;
    }
    Ok(application)
}

/// Creates a key for an existing application; the returned [`NewKey::key`] is the only copy.
pub async fn create_key(
    store: &Store,
    application_id: &str,
    scopes: &[Scope],
) -> Result<(KeyRow, NewKey), AdminError> {
    existing(store, application_id).await?;
    insert_key(store, application_id, scopes).await
}

/// Creates an organisation key: bound to no application, it reads every application (`read`)
/// and administers all of them and the schema set (`admin`). It cannot have `ingest`: every
/// event belongs to the application whose key sent it.
pub async fn create_organisation_key(
    store: &Store,
    scopes: &[Scope],
) -> Result<(KeyRow, NewKey), AdminError> {
    if scopes.contains(&Scope::Ingest) {
        return Err(AdminError::Invalid(
            "an organisation key cannot have the ingest scope: events are sent with a key of \
             their application"
                .to_owned(),
        ));
    }
    insert_key(store, "", scopes).await
}

/// Writes a new key of `application_id` (empty: the organisation).
async fn insert_key(
    store: &Store,
    application_id: &str,
    scopes: &[Scope],
) -> Result<(KeyRow, NewKey), AdminError> {
    if scopes.is_empty() {
        return Err(AdminError::Invalid(
            "a key needs at least one scope".to_owned(),
        ));
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

/// The application `demo` for newcomers: created once, with an ingest and a read key of its
/// own and an organisation admin key. `None` when it exists already (its keys were shown when it was created).
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
    // Whoever tries The Eye out is its operator: the admin key is the organisation's, so that
    // it can also reload the schema set and register applications.
    let (_, admin) = create_organisation_key(store, &[Scope::Admin]).await?;
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

    /// Control characters in names and origins are refused, and quoted escaped (issue 28).
    #[test]
    fn names_and_origins_refuse_control_characters() {
        for bad in [
            "https://a.example\nhttps://b.example",
            "https://a\u{1b}[2J.example",
            "https://a\0.example",
            "https://a\u{202e}.example",
            "https://bücher.example",
        ] {
            let error = normalise_origin(bad).unwrap_err().to_string();
            assert!(
                !error.contains(['\n', '\u{1b}', '\0', '\u{202e}']),
                "{error}"
            );
        }
        for bad in [
            "Shop\nforged-row",
            "Shop\u{1b}[31m",
            "Shop\0",
            "Shop\u{202e}pohs",
            "a\tb",
        ] {
            let error = checked_name(bad).unwrap_err().to_string();
            assert!(error.contains("control character"), "{error}");
            assert!(
                !error.contains(['\n', '\u{1b}', '\0', '\u{202e}', '\t']),
                "{error}"
            );
        }
        assert_eq!(
            checked_name(" Web Shop (EU) – Ünïcode ").unwrap(),
            "Web Shop (EU) – Ünïcode"
        );
    }

    #[test]
    fn printable_escapes_what_would_act_on_a_terminal() {
        assert_eq!(printable("plain – text"), "plain – text");
        assert_eq!(printable("a\nb\u{1b}[2J\0"), "a\\nb\\u{1b}[2J\\u{0}");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
    }
}
