//! Personal data never lands raw (issue 30; docs/personal-data.md).
//!
//! Owns the rules that rewrite an event **before anything reads it** — validation, the spool,
//! `events`, `errors.raw`, logs, metrics, the live stream:
//! 1. the `x-pii` rules of its type's payload schema ([`rules`], which is
//!    [`crate::validate::pii`]: the schema loader parses them): `drop`, `hash`, `mask`;
//! 2. the application's query-parameter allowlist on URL-valued properties ([`url`]);
//! 3. the application's detector policy for what nobody declared ([`detector`]): `off`,
//!    `flag` (counted in `the_eye_pii_detected_total`, nothing changed) or `mask`.
//!
//! Order, and why: the rules run first, and validation then sees only what will be stored.
//! Validating the clear value first would let it reach the problem messages that
//! `errors.problem_message` stores (a failed `pattern` or `maxLength` quotes the value) — the
//! hash-after-use mistake of PostHog PR#42017. The cost: a schema constrains the stored
//! form (a hashed property is a 64-character hex string, a masked one `***…`), which the
//! loader checks where it can ([`rules::PiiRules::parse`]).
//!
//! Does not own: where the key comes from on disk beyond [`HashKey::resolve`], the
//! per-application settings' storage (`applications` table, `store::apps`), or the metric's
//! registration (`metrics`).

pub mod detector;
pub mod url;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Secret;
use crate::metrics::{BoundedLabel, Metrics};
use crate::validate::data::{Data, Members};
use crate::validate::json;
use crate::validate::schemas::{EventSchema, SchemaSet};

pub use crate::config::PrivacyConfig;
pub use crate::validate::pii::{self as rules, HashKey};

/// Shortest configured key accepted: 32 characters, 256 bits of a random hex or base64 one.
pub const MIN_SECRET_CHARS: usize = 32;

/// Why the hash key could not be had; the message names the setting or the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("privacy.hash_secret has {0} characters; at least {MIN_SECRET_CHARS} are needed (for example `openssl rand -hex 32`)")]
    TooShort(usize),
    #[error("privacy.hash_secret is empty and {path} cannot be read or created: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

/// Where the key of `x-pii: hash` comes from (kept with the other personal-data settings;
/// the key type and its use are [`crate::validate::pii`]'s).
impl HashKey {
    /// The configured key, or else the one in `dir/hash-secret`, created there (0600, 64 hex
    /// characters from the OS's random source) when missing. The second says whether the key
    /// came from that file.
    pub fn resolve(secret: &Secret, dir: &Path) -> Result<(Self, bool), KeyError> {
        if !secret.0.is_empty() {
            let chars = secret.0.chars().count();
            if chars < MIN_SECRET_CHARS {
                return Err(KeyError::TooShort(chars));
            }
            return Ok((Self::new(secret.0.as_bytes().to_vec()), false));
        }
        let path = dir.join("hash-secret");
        let fail = |source| KeyError::File {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().len() >= MIN_SECRET_CHARS => {
                return Ok((Self::new(text.trim().as_bytes().to_vec()), true))
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(fail(error)),
        }
        std::fs::create_dir_all(dir).map_err(fail)?;
        let bytes: [u8; 32] = rand::random();
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        crate::files::write_private(&path, &text).map_err(fail)?;
        Ok((Self::new(text.into_bytes()), true))
    }
}

/// An application's detector policy (`applications.pii_detector`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(example = "flag")]
pub enum DetectorPolicy {
    /// Nothing is scanned.
    Off,
    /// Findings are counted (`the_eye_pii_detected_total`); the event is stored unchanged.
    #[default]
    Flag,
    /// Findings are masked as `x-pii: mask` would, and counted.
    Mask,
}

impl DetectorPolicy {
    /// The stored spelling: `off`, `flag`, `mask`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Flag => "flag",
            Self::Mask => "mask",
        }
    }

    /// The policy named `text`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "off" => Some(Self::Off),
            "flag" => Some(Self::Flag),
            "mask" => Some(Self::Mask),
            _ => None,
        }
    }
}

/// One application's privacy settings, as its key's principal carries them.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSettings {
    /// Query parameters kept on URL-valued properties (see [`url::allowed`]).
    pub url_query_allowlist: Arc<[String]>,
    pub detector: DetectorPolicy,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            url_query_allowlist: url::DEFAULT_ALLOWLIST
                .iter()
                .map(|e| (*e).to_owned())
                .collect(),
            detector: DetectorPolicy::default(),
        }
    }
}

impl AppSettings {
    /// From the stored columns; an unknown policy (a newer version's) counts as `mask`, the
    /// strictest.
    pub fn from_columns(allowlist: &[String], detector: &str) -> Self {
        Self {
            url_query_allowlist: allowlist.into(),
            detector: DetectorPolicy::parse(detector).unwrap_or(DetectorPolicy::Mask),
        }
    }

    fn keeps_every_parameter(&self) -> bool {
        self.url_query_allowlist.iter().any(|entry| entry == "*")
    }
}

/// A change of an application's settings, from the admin API or CLI; `None` leaves a
/// setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    /// Query parameters kept on URL-valued properties, replacing the list in force: names,
    /// prefixes ending in `*` (`utm_*`), or `*` alone to keep every parameter. Up to 100
    /// entries of up to 100 characters: letters, digits and `_ - . [ ]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_query_allowlist: Option<Vec<String>>,
    /// The detector's policy: `off`, `flag` or `mask`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii_detector: Option<DetectorPolicy>,
}

/// The personal-data options of `apps create` and `apps update` (flattened into both).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsArgs {
    /// Query parameter kept on URL-valued properties (repeatable; replaces the list in
    /// force): a name, a prefix ending in `*` (`utm_*`), or `*` for all. Default: `utm_*`.
    #[arg(long = "url-query-allow")]
    pub url_query_allow: Vec<String>,
    /// The personal-data detector's policy: off, flag (default) or mask.
    #[arg(long, value_parser = ["off", "flag", "mask"])]
    pub pii_detector: Option<String>,
}

impl From<SettingsArgs> for SettingsUpdate {
    fn from(args: SettingsArgs) -> Self {
        Self {
            url_query_allowlist: (!args.url_query_allow.is_empty()).then_some(args.url_query_allow),
            pii_detector: args.pii_detector.as_deref().and_then(DetectorPolicy::parse),
        }
    }
}

/// Entries an allowlist may hold.
pub const MAX_ALLOWLIST_ENTRIES: usize = 100;

impl SettingsUpdate {
    /// Checks the update and writes it into `row`; `Err` says what is wrong.
    pub fn apply_to(&self, row: &mut crate::store::apps::ApplicationRow) -> Result<(), String> {
        if let Some(list) = &self.url_query_allowlist {
            if list.len() > MAX_ALLOWLIST_ENTRIES {
                return Err(format!(
                    "url_query_allowlist has {} entries; at most {MAX_ALLOWLIST_ENTRIES} are allowed",
                    list.len()
                ));
            }
            for entry in list {
                let name = entry.strip_suffix('*').unwrap_or(entry);
                let fine = entry.chars().count() <= 100
                    && !entry.is_empty()
                    && name.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']')
                    });
                if !fine {
                    return Err(format!(
                        "url_query_allowlist entry `{}` is not a parameter name, a prefix ending in `*`, or `*`; use up to 100 letters, digits and `_ - . [ ]`",
                        entry.escape_default()
                    ));
                }
            }
            row.url_query_allowlist = list.clone();
        }
        if let Some(policy) = self.pii_detector {
            row.pii_detector = policy.as_str().to_owned();
        }
        Ok(())
    }
}

/// What `errors.raw` holds instead of text no rule could be applied to (see
/// [`Privacy::screen_text`]).
pub const WITHHELD: &str = "[withheld: this text could not be read as events, and it names a property that a schema marks as personal data (x-pii); see docs/personal-data.md]";

/// Distinct `property` label values of `the_eye_pii_detected_total`; past these, `other`.
pub const MAX_PROPERTY_LABELS: usize = 200;

/// Longest `property` label value, in bytes; longer paths are cut.
const MAX_PROPERTY_LABEL_BYTES: usize = 64;

/// Envelope fields the detector does not scan: ids, names and times The Eye itself checks
/// (`user_id` is the application's account id, the key of erasure: see the README) — every
/// envelope field but `data`.
const ENVELOPE: [&str; 7] = json::STRING_FIELDS;

/// Where a value sits in the event, for the detector's `property` label (`data.form.note`,
/// array elements as `[]`): a chain of borrows, made into text only for a finding, which is
/// rare, instead of a push and a cut of a path buffer for every member walked (issue 34).
#[derive(Clone, Copy)]
enum Place<'p> {
    /// A member of the event.
    Member(&'p str),
    Key(&'p Place<'p>, &'p str),
    Elements(&'p Place<'p>),
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Member(key) => f.write_str(key),
            Self::Key(parent, key) => write!(f, "{parent}.{key}"),
            Self::Elements(parent) => write!(f, "{parent}[]"),
        }
    }
}

/// The rules engine of one instance.
pub struct Privacy {
    key: HashKey,
    config: PrivacyConfig,
    metrics: Arc<Metrics>,
    properties: BoundedLabel,
}

impl Privacy {
    pub fn new(key: HashKey, config: PrivacyConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            key,
            config,
            metrics,
            properties: BoundedLabel::new(MAX_PROPERTY_LABELS),
        }
    }

    /// Applies every rule to every item of a request of `application`, in place, before
    /// anything else reads them. An item that could not be read as a value keeps only its
    /// text, which [`Self::screen_text`] screens.
    pub fn apply_items(
        &self,
        application: &str,
        settings: &AppSettings,
        items: &mut [json::Item<'_>],
        schemas: &SchemaSet,
    ) {
        for item in items {
            let schema = schemas.of_item(item);
            match &mut item.value {
                Some(json::Read::Event(event)) => {
                    self.apply_to_event(application, settings, event, schema);
                }
                // Not an object: no rule applies (validation rejects it).
                Some(json::Read::Other(_)) => {}
                None => {
                    if let Some(raw) = item.raw {
                        if let Cow::Owned(_) = self.screen_text(raw, schemas) {
                            item.raw = Some(WITHHELD);
                        }
                    }
                }
            }
        }
    }

    /// Applies the rules to one event value (a JSON object; anything else is left alone).
    pub fn apply_event(
        &self,
        application: &str,
        settings: &AppSettings,
        event: &mut Value,
        schemas: &SchemaSet,
    ) {
        if !event.is_object() {
            return;
        }
        // The rules are written for `data` as the request path reads it.
        let mut tree = Data::owned(std::mem::take(event));
        if let Data::Object(object) = &mut tree {
            let schema = match (object.get("category"), object.get("name")) {
                (Some(Data::String(category)), Some(Data::String(name))) => {
                    schemas.get(category, name)
                }
                _ => None,
            };
            if let Some(Data::Object(data)) = object.get_mut("data") {
                self.rewrite_data(settings, schema, data);
            }
            if settings.detector != DetectorPolicy::Off {
                for (key, value) in object.iter_mut() {
                    if !ENVELOPE.contains(&key) {
                        let place = Place::Member(key);
                        self.detect_in(application, settings.detector, &place, value);
                    }
                }
            }
        }
        *event = tree.into_value();
    }

    /// [`Self::apply_event`] on an event as the request path reads it ([`json::Event`]):
    /// the same rules, in the same order, on the same members.
    fn apply_to_event(
        &self,
        application: &str,
        settings: &AppSettings,
        event: &mut json::Event<'_>,
        schema: Option<&EventSchema>,
    ) {
        if let Some(Data::Object(data)) = &mut event.data {
            self.rewrite_data(settings, schema, data);
        }
        if settings.detector == DetectorPolicy::Off {
            return;
        }
        // The members in the object's key order, as `apply_event` walks them: `data` among
        // the others (the envelope's string fields are not scanned).
        let policy = settings.detector;
        let mut data = event.data.as_mut();
        for (key, value) in event.rest.iter_mut() {
            if key.as_str() > "data" {
                if let Some(data) = data.take() {
                    self.detect_in(application, policy, &Place::Member("data"), data);
                }
            }
            if !ENVELOPE.contains(&key.as_str()) {
                // An unknown member (rare): walked as `data` is.
                let mut tree = Data::owned(std::mem::take(value));
                self.detect_in(application, policy, &Place::Member(key), &mut tree);
                *value = tree.into_value();
            }
        }
        if let Some(data) = data {
            self.detect_in(application, policy, &Place::Member("data"), data);
        }
    }

    /// The schema's `x-pii` rules and the URL allowlist, on `data`.
    fn rewrite_data(
        &self,
        settings: &AppSettings,
        schema: Option<&EventSchema>,
        data: &mut Members<'_>,
    ) {
        if let Some(schema) = schema.filter(|schema| !schema.pii.is_empty()) {
            schema.pii.apply_members(data, &self.key);
        }
        if !settings.keeps_every_parameter() {
            self.filter_urls(data, &settings.url_query_allowlist);
        }
    }

    fn filter_urls(&self, data: &mut Members<'_>, allow: &[String]) {
        // One pass over the members, each name compared with the configured ones by length
        // and first byte before its bytes: a look-up per configured property (a binary search
        // in the sorted members) cost ~670 instructions per event of a batch, the bytes
        // compared each time ~520 (issue 34). A property both URL- and query-valued is
        // filtered as a URL first.
        let named = |names: &[String], key: &str| {
            names.iter().any(|name| {
                name.len() == key.len()
                    && name.as_bytes().first() == key.as_bytes().first()
                    && name == key
            })
        };
        // Queries left empty, removed after the pass (no allocation unless there is one).
        let mut emptied: Vec<String> = Vec::new();
        for (key, value) in data.iter_mut() {
            let Data::String(text) = value else {
                continue;
            };
            if named(&self.config.url_properties, key) {
                if let Some(kept) = url::filter_url(text, allow) {
                    *text = Cow::Owned(kept);
                }
            }
            if named(&self.config.query_properties, key) {
                match url::filter_query(text, allow) {
                    Some(kept) if kept.is_empty() => emptied.push(key.to_owned()),
                    Some(kept) => *text = Cow::Owned(kept),
                    None => {}
                }
            }
        }
        for key in emptied {
            data.remove(&key);
        }
    }

    /// Scans every string below one value at `place`; counts, and under `mask` masks, what
    /// it finds. Recursive: the parser refuses JSON nested deeper than 128 levels, so the
    /// depth is bounded.
    fn detect_in(
        &self,
        application: &str,
        policy: DetectorPolicy,
        place: &Place<'_>,
        value: &mut Data<'_>,
    ) {
        match value {
            Data::String(text) => {
                let found = detector::scan(text);
                if found.is_empty() {
                    return;
                }
                let path = place.to_string();
                for finding in &found {
                    self.count(application, finding.kind, &path);
                }
                if policy == DetectorPolicy::Mask {
                    *text = Cow::Owned(detector::mask(text, &found));
                }
            }
            Data::Object(children) => {
                for (key, child) in children.iter_mut() {
                    self.detect_in(application, policy, &Place::Key(place, key), child);
                }
            }
            // Elements share one label: `items[]`, not one per index.
            Data::Array(children) => {
                let place = Place::Elements(place);
                for child in children.iter_mut() {
                    self.detect_in(application, policy, &place, child);
                }
            }
            _ => {}
        }
    }

    /// Counts one finding. The `property` label is the path in the event (`data.form.note`,
    /// array indices as `[]`), cut to 64 bytes, and `other` past [`MAX_PROPERTY_LABELS`]
    /// distinct paths; a path that itself looks like personal data (an e-mail used as a key)
    /// is counted as `(personal data in a key)`, so that the label never holds it.
    fn count(&self, application: &str, kind: detector::Kind, path: &str) {
        let label = if detector::scan(path).is_empty() {
            crate::validate::truncate_chars(path, MAX_PROPERTY_LABEL_BYTES)
        } else {
            "(personal data in a key)"
        };
        self.metrics
            .pii_detected
            .with_label_values(&[
                self.metrics.application(application),
                kind.as_str(),
                self.properties.value(label),
            ])
            .inc();
    }

    /// `text` as `errors.raw` may keep it, for text that is not an event the rules could be
    /// applied to (a body refused as a whole, an item that could not be read): unchanged
    /// unless it names, as a JSON key, a property that a schema marks (`"first_name"`), in
    /// which case it is withheld whole ([`WITHHELD`]) — the clear value may be next to it.
    pub fn screen_text<'a>(&self, text: &'a str, schemas: &SchemaSet) -> Cow<'a, str> {
        let marked = schemas.types().into_iter().any(|schema| {
            schema
                .pii
                .names()
                .iter()
                .any(|name| text.contains(&format!("\"{name}\"")))
        });
        if marked {
            Cow::Owned(WITHHELD.to_owned())
        } else {
            Cow::Borrowed(text)
        }
    }

    /// Whether some schema of `schemas` hashes a property.
    pub fn uses_hash(schemas: &SchemaSet) -> bool {
        schemas.types().iter().any(|schema| schema.pii.uses_hash())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shipped() -> SchemaSet {
        SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
    }

    fn privacy() -> (Privacy, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(100));
        let key = HashKey::new(b"0123456789abcdef0123456789abcdef".to_vec());
        (
            Privacy::new(key, PrivacyConfig::default(), metrics.clone()),
            metrics,
        )
    }

    fn settings(allow: &[&str], detector: DetectorPolicy) -> AppSettings {
        AppSettings {
            url_query_allowlist: allow.iter().map(|e| (*e).to_owned()).collect(),
            detector,
        }
    }

    #[test]
    fn the_shipped_submit_schema_hashes_the_name_fields() {
        let (privacy, _) = privacy();
        let mut event = json!({"category": "form interaction", "name": "submit", "data": {
            "host": "h", "path": "/signup?token=t&utm_source=news",
            "form": {"first_name": "John", "last_name": "Doe", "plan": "pro"}}});
        privacy.apply_event("app", &AppSettings::default(), &mut event, &shipped());
        let form = &event["data"]["form"];
        assert_eq!(form["first_name"], privacy.key.hash("John"));
        assert_eq!(form["last_name"], privacy.key.hash("Doe"));
        assert_eq!(form["plan"], "pro");
        assert_eq!(event["data"]["path"], "/signup?utm_source=news");
        assert!(Privacy::uses_hash(&shipped()));
    }

    #[test]
    fn urls_keep_only_the_allowlist_and_an_empty_query_goes() {
        let (privacy, _) = privacy();
        let mut event = json!({"category": "c", "name": "n", "data": {
            "path": "/s?q=shoes&token=t", "referrer": "https://r.example/?email=a%40b.c",
            "query": "token=t", "url": "https://x.example/?q=1", "other": "/keep?token=t"}});
        privacy.apply_event(
            "app",
            &settings(&["utm_*", "q"], DetectorPolicy::Off),
            &mut event,
            &shipped(),
        );
        assert_eq!(
            event["data"],
            json!({"path": "/s?q=shoes", "referrer": "https://r.example/",
                   "url": "https://x.example/?q=1", "other": "/keep?token=t"})
        );
        let mut kept = json!({"category": "c", "name": "n", "data": {"path": "/s?token=t"}});
        privacy.apply_event(
            "app",
            &settings(&["*"], DetectorPolicy::Off),
            &mut kept,
            &shipped(),
        );
        assert_eq!(kept["data"]["path"], "/s?token=t");
    }

    #[test]
    fn the_detector_flags_or_masks_by_policy_and_never_an_envelope_field() {
        let (privacy, metrics) = privacy();
        let uuid = "e2085be5-9137-4e4e-80b5-f1ffddc25423";
        let event = json!({"session_id": "jane@example.com", "category": "c", "name": "n", "data": {
            "note": "jane@example.com", "items": [{"card": "4111111111111111"}], "id": uuid}});
        let mut flagged = event.clone();
        privacy.apply_event(
            "app",
            &settings(&["*"], DetectorPolicy::Flag),
            &mut flagged,
            &shipped(),
        );
        assert_eq!(flagged, event, "flag changes nothing");
        let count = |kind: &str, property: &str| {
            metrics
                .pii_detected
                .with_label_values(&["app", kind, property])
                .get()
        };
        assert_eq!(count("email", "data.note"), 1);
        assert_eq!(count("card", "data.items[].card"), 1);
        assert_eq!(count("email", "session_id"), 0);
        let mut masked = event.clone();
        privacy.apply_event(
            "app",
            &settings(&["*"], DetectorPolicy::Mask),
            &mut masked,
            &shipped(),
        );
        assert_eq!(masked["data"]["note"], "***@example.com");
        assert_eq!(masked["data"]["items"][0]["card"], "************1111");
        assert_eq!(masked["data"]["id"], uuid);
        assert_eq!(masked["session_id"], "jane@example.com");
        let mut off = event.clone();
        privacy.apply_event(
            "app",
            &settings(&["*"], DetectorPolicy::Off),
            &mut off,
            &shipped(),
        );
        assert_eq!(off, event);
        assert_eq!(count("email", "data.note"), 2, "off counts nothing");
    }

    /// The detector's labels come from one path buffer cut back after each child: siblings
    /// after a nested object or array are labelled from their own parent, not the last child.
    #[test]
    fn detector_labels_are_the_paths_of_nested_values() {
        let (privacy, metrics) = privacy();
        let mut event = json!({"category": "c", "name": "n", "data": {
            "a": {"b": {"c": "x@example.com"}, "d": "y@example.com"},
            "e": [["z@example.com"], {"f": "w@example.com"}],
            "g": "v@example.com"}, "extra": {"h": "u@example.com"}});
        privacy.apply_event(
            "app",
            &settings(&["*"], DetectorPolicy::Flag),
            &mut event,
            &shipped(),
        );
        let count = |property: &str| {
            metrics
                .pii_detected
                .with_label_values(&["app", "email", property])
                .get()
        };
        for property in [
            "data.a.b.c",
            "data.a.d",
            "data.e[][]",
            "data.e[].f",
            "data.g",
            "extra.h",
        ] {
            assert_eq!(count(property), 1, "{property}");
        }
    }

    /// The request path reads each event with its envelope apart ([`json::Event`]); the
    /// rules do to it what they do to the same event as one value — the same rewritten
    /// members, the same findings counted under the same labels — for every policy, with and
    /// without an allowlist, whatever the envelope holds or wherever the other keys sort.
    #[test]
    fn events_read_apart_get_what_values_get() {
        let bodies = [
            r#"{"session_id": "s", "category": "form interaction", "name": "submit", "timestamp": "t", "user_id": "u@example.com", "aaa": "bob@example.com", "zzz": ["4111 1111 1111 1111"], "data": {"host": "h", "path": "/a?email=jane@example.com&utm_source=x", "url": "https://x.example/?token=abc&utm_source=y", "form": {"first_name": "Ada", "last_name": "Lovelace", "note": "call ada@example.com"}}}"#,
            r#"{"category": "page interaction", "name": "pageview", "data": {"url": "https://x.example/?q=jane@example.com", "query": "token=1"}, "dat": "x@example.com", "data2": "y@example.com"}"#,
            r#"{"category": 1, "name": "submit", "data": "x@example.com", "extra": {"e": "y@example.com"}}"#,
            r#"{"user_id": 5, "sent_at": "a@example.com", "name": "submit", "category": "form interaction", "data": {"form": {"first_name": "A"}}}"#,
            r#"["not", "an", "event"]"#,
        ];
        let schemas = shipped();
        for policy in [
            DetectorPolicy::Off,
            DetectorPolicy::Flag,
            DetectorPolicy::Mask,
        ] {
            for allow in [&[][..], &["utm_source"][..]] {
                let settings = settings(allow, policy);
                let (apart, apart_metrics) = privacy();
                let (whole, whole_metrics) = privacy();
                for body in bodies {
                    let mut items = match json::decode_body(body.as_bytes()).unwrap() {
                        json::Body::Single(item) => vec![item],
                        json::Body::Batch(items) => items,
                        json::Body::Other(_) => unreachable!(),
                    };
                    let mut values: Vec<Value> = match serde_json::from_str(body).unwrap() {
                        Value::Array(values) => values,
                        value => vec![value],
                    };
                    apart.apply_items("app", &settings, &mut items, &schemas);
                    for value in &mut values {
                        whole.apply_event("app", &settings, value, &schemas);
                    }
                    let read: Vec<Value> = items.iter().filter_map(json::Item::to_value).collect();
                    assert_eq!(read, values, "{policy:?} {allow:?} {body}");
                }
                let findings = |metrics: &Metrics| -> Vec<String> {
                    let text = metrics.render();
                    text.lines()
                        .filter(|line| line.starts_with("the_eye_pii_detected_total{"))
                        .map(str::to_owned)
                        .collect()
                };
                let counted = findings(&apart_metrics);
                assert_eq!(counted, findings(&whole_metrics), "{policy:?}");
                assert_eq!(counted.is_empty(), policy == DetectorPolicy::Off);
            }
        }
    }

    #[test]
    fn unreadable_text_naming_a_marked_property_is_withheld() {
        let (privacy, _) = privacy();
        let schemas = shipped();
        assert_eq!(
            privacy.screen_text(r#"{"form": {"first_name": "John\ud800"}}"#, &schemas),
            WITHHELD
        );
        assert_eq!(
            privacy.screen_text("{\"session_id\": ", &schemas),
            "{\"session_id\": "
        );
    }

    #[test]
    fn keys_come_from_the_configuration_or_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let short = HashKey::resolve(&Secret("short".into()), dir.path()).unwrap_err();
        assert!(short.to_string().contains("privacy.hash_secret"), "{short}");
        let (configured, from_file) =
            HashKey::resolve(&Secret("k".repeat(40)), dir.path()).unwrap();
        assert!(!from_file);
        assert_eq!(format!("{configured:?}"), "HashKey(***)");
        let (generated, from_file) = HashKey::resolve(&Secret::default(), dir.path()).unwrap();
        assert!(from_file);
        let path = dir.path().join("hash-secret");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, _) = HashKey::resolve(&Secret::default(), dir.path()).unwrap();
        assert_eq!(generated.hash("x"), again.hash("x"), "the file is reused");
        assert_ne!(generated.hash("x"), configured.hash("x"));
    }
}
