//! Per-event-type payload schemas: a directory with an `index.json` mapping each event type
//! (`category` + `name`, which hold spaces and so cannot be file names) to a JSON Schema
//! (draft 2020-12) file that its `data` must satisfy.
//!
//! A [`SchemaSet`] is loaded and compiled as a whole, once; validating an event only runs the
//! compiled validator. [`SchemaRegistry`] holds the set in force and swaps in a new one on
//! reload only if every schema of it loads and compiles, so a broken edit never leaves the
//! service without schemas.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use serde_json::Value;

use super::data::{Data, DataJson};

/// What to do with events whose type has no schema: a setting (`ingest.unknown_event_types`),
/// so its type lives in `config`, which imports nothing of the crate.
pub use crate::config::UnknownTypes;

/// A schema set that could not be loaded; the message names the file and the problem.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {message}")]
pub struct SchemaError {
    pub file: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    #[serde(rename = "$comment", default)]
    _comment: Option<String>,
    types: Vec<IndexEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexEntry {
    category: String,
    name: String,
    schema: PathBuf,
}

/// One event type with its schema.
pub struct EventSchema {
    pub category: String,
    pub name: String,
    /// The schema document as written, for `GET /api/schemas`.
    pub document: Value,
    /// Compiled for [`Data`], the form in which events' `data` is read.
    validator: jsonschema::Validator<DataJson>,
    /// Its `x-pii` rules (issue 30; src/privacy/rules.rs), applied before validation.
    pub pii: super::pii::PiiRules,
}

/// One payload problem: where, which keyword failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadProblem {
    /// Path from the event, such as `data.form.first_name` or `data.items[2]`.
    pub field: String,
    /// Stable code derived from the failed keyword: `required`, `type`, `min_length`, …
    pub code: String,
    pub message: String,
}

/// A compiled set of schemas.
#[derive(Default)]
pub struct SchemaSet {
    /// Sorted by category, then name: a look-up (twice per event: the personal-data rules and
    /// validation) is a binary search that borrows the event's strings, with no key to build
    /// and no hashing (SipHash of both strings cost more than the few comparisons).
    types: Vec<EventSchema>,
    /// Positions in `types`, sorted by [`SchemaSet::look_up_key`]: the lengths of category and
    /// name first, so that a look-up's comparisons are mostly of two integers, and the texts
    /// are compared only where both lengths are equal (the four string comparisons of a
    /// look-up among the shipped types were ~250 instructions; BENCHMARKS.md, "Issue 34,
    /// ninth session").
    by_length: Vec<usize>,
}

impl SchemaSet {
    /// The set of `types`, sorted by category, then name.
    fn new(types: Vec<EventSchema>) -> Self {
        let mut by_length: Vec<usize> = (0..types.len()).collect();
        by_length.sort_by(|&a, &b| {
            let key = |at: usize| Self::look_up_key(&types[at].category, &types[at].name);
            key(a).cmp(&key(b))
        });
        Self { types, by_length }
    }

    /// The order of [`SchemaSet::by_length`].
    fn look_up_key<'a>(category: &'a str, name: &'a str) -> (usize, usize, &'a str, &'a str) {
        (category.len(), name.len(), category, name)
    }

    /// Loads `dir/index.json` and every schema it names, compiling each; any failure refuses
    /// the whole set.
    pub fn load(dir: &Path) -> Result<Self, SchemaError> {
        let index_path = dir.join("index.json");
        let index: Index = read_json(&index_path)?;
        let mut types: Vec<EventSchema> = Vec::with_capacity(index.types.len());
        for entry in index.types {
            let file = confined(dir, &index_path, &entry.schema)?;
            let document: Value = read_json(&file)?;
            let (validator, pii) = compile(&document).map_err(|message| SchemaError {
                file: file.display().to_string(),
                message,
            })?;
            if types
                .iter()
                .any(|known| known.category == entry.category && known.name == entry.name)
            {
                return Err(SchemaError {
                    file: index_path.display().to_string(),
                    message: format!(
                        "event type ({:?}, {:?}) is listed twice",
                        entry.category, entry.name
                    ),
                });
            }
            types.push(EventSchema {
                category: entry.category,
                name: entry.name,
                document,
                validator,
                pii,
            });
        }
        types.sort_by(|a, b| (&a.category, &a.name).cmp(&(&b.category, &b.name)));
        Ok(Self::new(types))
    }

    /// The schema of event type (`category`, `name`), if one is registered.
    pub fn get(&self, category: &str, name: &str) -> Option<&EventSchema> {
        let wanted = Self::look_up_key(category, name);
        let found = self
            .by_length
            .binary_search_by(|&at| {
                let known = &self.types[at];
                Self::look_up_key(&known.category, &known.name).cmp(&wanted)
            })
            .ok()?;
        self.types.get(self.by_length[found])
    }

    /// The schema of `item`'s event type, from its `category` and `name` as read: `None` when
    /// it is not an event object, either is not a string, or no schema is registered.
    pub fn of_item(&self, item: &super::json::Item<'_>) -> Option<&EventSchema> {
        match &item.value {
            Some(super::json::Read::Event(event)) => self.get(event.string(3)?, event.string(4)?),
            _ => None,
        }
    }

    /// Every event type, sorted by category and name.
    pub fn types(&self) -> Vec<&EventSchema> {
        self.types.iter().collect()
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

/// Compiles one payload schema document exactly as [`SchemaSet::load`] does, with its
/// personal-data rules; the error says why it is not a valid draft 2020-12 schema (or uses a
/// pattern this service refuses), or why its `x-pii` keywords are refused — a bad `x-pii`
/// refuses the set like a bad schema.
fn compile(
    document: &Value,
) -> Result<(jsonschema::Validator<DataJson>, super::pii::PiiRules), String> {
    let validator = options::<DataJson>()
        .build(document)
        .map_err(|error| format!("not a valid draft 2020-12 schema: {error}"))?;
    let pii = super::pii::PiiRules::parse(document)?;
    Ok((validator, pii))
}

/// How every payload schema is compiled, for instances of the representation `F`.
fn options<'i, F: jsonschema::json::Json>(
) -> jsonschema::ValidationOptions<'i, std::sync::Arc<dyn jsonschema::Retrieve>, F> {
    jsonschema::options_for::<F>()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        // `pattern` and `patternProperties` run on the `regex` crate: matching is
        // linear in the value, so no pattern can make one value cost seconds on an
        // async worker (issue 28: `^(a*)*\1b$` cost ~53 ms per value on the default
        // backtracking engine). What needs backtracking — backreferences, look-around
        // — is refused at load with the reason. The compiled size is bounded so that
        // the per-byte cost of a match is bounded too; with `ingest.max_body_bytes`
        // that bounds the validation of one request.
        .with_pattern_options(
            jsonschema::PatternOptions::regex()
                .size_limit(MAX_PATTERN_BYTES)
                .dfa_size_limit(MAX_PATTERN_BYTES),
        )
}

impl SchemaSet {
    /// A set of one event type whose schema is `document`, compiled as [`SchemaSet::load`]
    /// compiles a file: for trying a candidate schema on stored events (`crate::backtest`)
    /// with the very validator ingest would run. The error's `file` is `candidate`.
    pub fn single(category: &str, name: &str, document: Value) -> Result<Self, SchemaError> {
        let (validator, pii) = compile(&document).map_err(|message| SchemaError {
            file: "candidate".to_owned(),
            message,
        })?;
        let schema = EventSchema {
            category: category.to_owned(),
            name: name.to_owned(),
            document,
            validator,
            pii,
        };
        Ok(Self::new(vec![schema]))
    }
}

impl EventSchema {
    /// Every way `data` fails the schema.
    pub fn check(&self, data: &Value) -> Vec<PayloadProblem> {
        self.check_data(&Data::borrowed(data))
    }

    /// [`Self::check`] on `data` as the request path reads it.
    pub fn check_data(&self, data: &Data<'_>) -> Vec<PayloadProblem> {
        // Most events are valid: `is_valid` stops at nothing and builds no error or path, at a
        // fraction of `iter_errors`' cost; the problems are collected only for an invalid one.
        if self.validator.is_valid(data) {
            return Vec::new();
        }
        self.validator
            .iter_errors(data)
            .flat_map(|error| problems_of(&error))
            .collect()
    }
}

/// The compiled size of one payload schema `pattern` (and the lazy DFA's cache): ample for
/// patterns of paths, ids and codes (the shipped ones compile to a few KiB), small enough that
/// matching one value costs microseconds per KiB.
pub const MAX_PATTERN_BYTES: usize = 1 << 20;

/// `dir/name`, refused unless it stays inside `dir`: `index.json` names files of the schema
/// directory only — no absolute path, no `..`, no symbolic link leading out — so that an
/// index cannot load (and `GET /api/schemas` serve) a file from elsewhere on the host.
fn confined(dir: &Path, index_path: &Path, name: &Path) -> Result<PathBuf, SchemaError> {
    use std::path::Component;
    let refuse = |why: &str| {
        SchemaError {
        file: index_path.display().to_string(),
        message: format!(
            "schema file `{}` {why}; name a file inside the schema directory, such as `pageview.json`",
            name.display()
        ),
    }
    };
    if !name
        .components()
        .all(|part| matches!(part, Component::Normal(_)))
    {
        return Err(refuse("leaves the schema directory"));
    }
    let file = dir.join(name);
    // A symbolic link inside the directory may still lead out of it.
    if let (Ok(real_dir), Ok(real_file)) = (dir.canonicalize(), file.canonicalize()) {
        if !real_file.starts_with(&real_dir) {
            return Err(refuse("is a link that leads out of the schema directory"));
        }
    }
    Ok(file)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SchemaError> {
    let fail = |message: String| SchemaError {
        file: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|error| fail(error.to_string()))?;
    // Editors on Windows may save with a byte-order mark (RFC 8259 §8.1 lets a parser skip it).
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    serde_json::from_str(text).map_err(|error| fail(error.to_string()))
}

/// `data.form.first_name` style path of an instance location.
fn field_path(location: &jsonschema::paths::Location) -> String {
    let mut path = String::from("data");
    for segment in location {
        match segment {
            jsonschema::paths::LocationSegment::Property(name) => {
                path.push('.');
                path.push_str(&name);
            }
            jsonschema::paths::LocationSegment::Index(index) => {
                path.push_str(&format!("[{index}]"));
            }
        }
    }
    path
}

/// `minLength` → `min_length`: codes share the API's snake case.
fn snake_case(keyword: &str) -> String {
    let mut code = String::with_capacity(keyword.len() + 4);
    for c in keyword.chars() {
        if c.is_ascii_uppercase() {
            code.push('_');
            code.push(c.to_ascii_lowercase());
        } else {
            code.push(c);
        }
    }
    code
}

/// One problem per failing location. A missing property and an unexpected one are reported
/// at the property's own path, which is what a person fixing the payload looks for.
fn problems_of(error: &jsonschema::ValidationError<'_>) -> Vec<PayloadProblem> {
    use jsonschema::error::ValidationErrorKind as Kind;
    let at = field_path(error.instance_path());
    let code = snake_case(error.kind().keyword());
    match error.kind() {
        Kind::Required { property } => {
            let property = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            vec![PayloadProblem {
                field: format!("{at}.{property}"),
                code,
                message: format!("`{property}` is required"),
            }]
        }
        Kind::AdditionalProperties { unexpected } | Kind::UnevaluatedProperties { unexpected } => {
            unexpected
                .iter()
                .map(|property| PayloadProblem {
                    field: format!("{at}.{property}"),
                    code: code.clone(),
                    message: format!("`{property}` is not allowed here"),
                })
                .collect()
        }
        _ => vec![PayloadProblem {
            field: at,
            code,
            message: error.to_string(),
        }],
    }
}

/// The schema set in force, swapped as a whole on reload.
pub struct SchemaRegistry {
    dir: PathBuf,
    pub unknown_types: UnknownTypes,
    current: RwLock<Arc<SchemaSet>>,
}

impl SchemaRegistry {
    /// Loads the set at `dir`; start-up fails if it does not load.
    pub fn load(dir: PathBuf, unknown_types: UnknownTypes) -> Result<Self, SchemaError> {
        let set = SchemaSet::load(&dir)?;
        Ok(Self {
            dir,
            unknown_types,
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// A registry without schemas, for tests and embedders that want none.
    pub fn empty(unknown_types: UnknownTypes) -> Self {
        Self {
            dir: PathBuf::new(),
            unknown_types,
            current: RwLock::new(Arc::new(SchemaSet::default())),
        }
    }

    pub fn current(&self) -> Arc<SchemaSet> {
        self.current
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Loads the directory again; on success the new set replaces the old one, on failure the
    /// old one stays in force. Returns the number of event types now in force.
    pub fn reload(&self) -> Result<usize, SchemaError> {
        let set = SchemaSet::load(&self.dir)?;
        let count = set.len();
        *self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(set);
        Ok(count)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map};

    use super::*;

    fn shipped() -> SchemaSet {
        SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"))
            .expect("the shipped schemas load")
    }

    fn problems(category: &str, name: &str, data: Value) -> Vec<(String, String)> {
        shipped()
            .get(category, name)
            .expect("schema exists")
            .check(&data)
            .into_iter()
            .map(|p| (p.field, p.code))
            .collect()
    }

    fn pair(field: &str, code: &str) -> (String, String) {
        (field.to_owned(), code.to_owned())
    }

    /// `data` is validated as [`Data`] through `jsonschema`'s `Json` trait: each shipped
    /// schema, compiled for `serde_json::Value` too with the same options, must find the
    /// same problems — fields, codes, messages, order — in random payloads made of its own
    /// property names and values at and past every bound (lengths in bytes and characters,
    /// the `pattern`, the `enum`, property counts and name lengths, JSON types, nesting).
    #[test]
    fn data_is_validated_as_a_value_would_be() {
        struct Rng(u64);
        impl Rng {
            fn below(&mut self, n: usize) -> usize {
                self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                ((z ^ (z >> 31)) % n as u64) as usize
            }
        }
        fn text(rng: &mut Rng) -> Value {
            let len = [0, 1, 2, 199, 200, 201, 253, 254, 2048, 2049][rng.below(10)];
            let unit = ["a", "é", "🦀", "/"][rng.below(4)];
            let mut text = unit.repeat(len);
            if rng.below(3) == 0 {
                text.insert(0, '/');
            }
            Value::String(text)
        }
        fn value(rng: &mut Rng, names: &[&str], depth: usize) -> Value {
            match rng.below(if depth > 2 { 7 } else { 9 }) {
                0 => Value::Null,
                1 => Value::Bool(rng.below(2) == 0),
                2 => [json!(1), json!(-1), json!(1.5), json!(1.0)][rng.below(4)].clone(),
                3 => json!(["pending", "granted", "denied"][rng.below(3)]),
                4..=6 => text(rng),
                7 => Value::Array(
                    (0..rng.below(3))
                        .map(|_| value(rng, names, depth + 1))
                        .collect(),
                ),
                _ => object(rng, names, depth + 1),
            }
        }
        fn object(rng: &mut Rng, names: &[&str], depth: usize) -> Value {
            let count = [0, 1, 2, 3, 5, 201][rng.below(6)];
            let mut object = Map::new();
            for n in 0..count {
                let name = match rng.below(6) {
                    0 => format!("extra{n}"),
                    1 => "n".repeat(201),
                    _ => names[rng.below(names.len())].to_owned(),
                };
                object.insert(name, value(rng, names, depth));
            }
            Value::Object(object)
        }
        let names = [
            "host",
            "path",
            "title",
            "referrer",
            "query",
            "consent",
            "element",
            "form",
            "first_name",
            "last_name",
            "email",
        ];
        let mut rng = Rng(35);
        for schema in shipped().types() {
            let as_value = options::<jsonschema::json::SerdeJson>()
                .build(&schema.document)
                .unwrap();
            for _ in 0..800 {
                let data = object(&mut rng, &names, 0);
                let expected: Vec<PayloadProblem> = as_value
                    .iter_errors(&data)
                    .flat_map(|error| problems_of(&error))
                    .collect();
                assert_eq!(as_value.is_valid(&data), expected.is_empty());
                assert_eq!(
                    schema.check_data(&Data::borrowed(&data)),
                    expected,
                    "{} / {}: {data}",
                    schema.category,
                    schema.name
                );
            }
        }
    }

    #[test]
    fn the_shipped_examples_are_valid() {
        let set = shipped();
        assert_eq!(set.len(), 3);
        assert!(problems(
            "page interaction",
            "pageview",
            json!({"host": "www.consumeraffairs.com", "path": "/"})
        )
        .is_empty());
        assert!(problems(
            "page interaction",
            "cta click",
            json!({"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"})
        )
        .is_empty());
        assert!(problems("form interaction", "submit", json!({"host": "www.consumeraffairs.com", "path": "/", "form": {"first_name": "John", "last_name": "Doe"}})).is_empty());
        assert!(set.get("page interaction", "scroll").is_none());
    }

    /// The look-up by lengths first finds what a search of every type by its category and
    /// name finds, for every type of a set whose types share categories, names and lengths,
    /// and for names near theirs that no type has.
    #[test]
    fn a_look_up_finds_what_a_linear_search_finds() {
        let schema = json!({"type": "object"});
        let mut types = Vec::new();
        for category in [
            "a",
            "b",
            "ab",
            "ba",
            "page interaction",
            "form interaction",
            "",
        ] {
            for name in ["x", "y", "xy", "yx", "pageview", "cta click", "submit", "é"] {
                let mut set = SchemaSet::single(category, name, schema.clone()).unwrap();
                types.append(&mut set.types);
            }
        }
        types.sort_by(|a, b| (&a.category, &a.name).cmp(&(&b.category, &b.name)));
        let set = SchemaSet::new(types);
        let tried = [
            "a", "b", "c", "ab", "ba", "aa", "x", "y", "z", "xy", "yx", "xx", "é", "e",
        ];
        let linear = |category: &str, name: &str| {
            set.types
                .iter()
                .find(|known| known.category == category && known.name == name)
                .map(|known| (&known.category, &known.name))
        };
        let mut found = 0;
        for category in tried
            .iter()
            .chain(&["page interaction", "form interaction", ""])
        {
            for name in tried
                .iter()
                .chain(&["pageview", "cta click", "submit", "pageviews"])
            {
                let got = set
                    .get(category, name)
                    .map(|known| (&known.category, &known.name));
                assert_eq!(got, linear(category, name), "{category:?} {name:?}");
                found += usize::from(got.is_some());
            }
        }
        assert!(found > 40, "{found}");
        for known in &set.types {
            assert!(std::ptr::eq(
                set.get(&known.category, &known.name).unwrap(),
                known
            ));
        }
    }

    #[test]
    fn every_failure_is_reported_at_its_path_with_a_keyword_code() {
        let mut found = problems(
            "page interaction",
            "pageview",
            json!({"path": "home", "colour": 1}),
        );
        found.sort();
        assert_eq!(
            found,
            vec![
                pair("data.colour", "additional_properties"),
                pair("data.host", "required"),
                pair("data.path", "pattern"),
            ]
        );
        let found = problems(
            "form interaction",
            "submit",
            json!({"host": "", "path": "/", "form": {"first_name": 7, "age": [1]}}),
        );
        for expected in [
            pair("data.host", "min_length"),
            pair("data.form.first_name", "type"),
            pair("data.form.age", "type"),
        ] {
            assert!(found.contains(&expected), "{expected:?} not in {found:?}");
        }
        let found = problems(
            "page interaction",
            "cta click",
            json!({"host": "h", "path": "/", "element": "x".repeat(201)}),
        );
        assert_eq!(found, vec![pair("data.element", "max_length")]);
        let found = problems(
            "form interaction",
            "submit",
            json!({"host": "h", "path": "/", "form": {}}),
        );
        assert_eq!(found, vec![pair("data.form", "min_properties")]);
    }

    #[test]
    fn a_broken_set_is_refused_whole_and_the_old_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.json"),
            r#"{"types": [{"category": "c", "name": "n", "schema": "n.json"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("n.json"),
            r#"{"type": "object", "required": ["a"]}"#,
        )
        .unwrap();
        let registry = SchemaRegistry::load(dir.path().to_owned(), UnknownTypes::Accept).unwrap();
        assert_eq!(registry.current().len(), 1);

        std::fs::write(dir.path().join("n.json"), r#"{"type": "no such type"}"#).unwrap();
        let error = registry.reload().unwrap_err();
        assert!(error.file.ends_with("n.json"), "{error}");
        assert!(
            registry.current().get("c", "n").is_some(),
            "the old set is still in force"
        );

        std::fs::write(dir.path().join("n.json"), "{not json").unwrap();
        assert!(registry.reload().is_err());
        std::fs::remove_file(dir.path().join("n.json")).unwrap();
        assert!(registry.reload().is_err());

        std::fs::write(dir.path().join("n.json"), r#"{"type": "object"}"#).unwrap();
        assert_eq!(registry.reload().unwrap(), 1);
        assert!(registry
            .current()
            .get("c", "n")
            .unwrap()
            .check(&json!({}))
            .is_empty());
    }

    fn one_type(dir: &Path, schema_name: &str) {
        std::fs::write(
            dir.join("index.json"),
            format!(
                r#"{{"types": [{{"category": "c", "name": "n", "schema": "{schema_name}"}}]}}"#
            ),
        )
        .unwrap();
    }

    /// Patterns needing a backtracking engine are refused at load with the reason; patterns
    /// that are catastrophic for one run in linear time (issue 28, item 10).
    #[test]
    fn patterns_run_in_linear_time_or_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        one_type(dir.path(), "n.json");
        for pattern in [r"^(a*)*\\1b$", r"^(?=a)a$", r"^(?<!b)a$"] {
            std::fs::write(
                dir.path().join("n.json"),
                format!(r#"{{"type": "object", "properties": {{"v": {{"type": "string", "pattern": "{pattern}"}}}}}}"#),
            )
            .unwrap();
            let error = SchemaSet::load(dir.path())
                .err()
                .unwrap_or_else(|| panic!("{pattern} loaded"));
            assert!(error.file.ends_with("n.json"), "{error}");
            assert!(
                error.message.contains("not a valid draft 2020-12 schema"),
                "{error}"
            );
        }
        // Exponential on a backtracking engine; linear here, and still a correct match.
        std::fs::write(
            dir.path().join("n.json"),
            r#"{"type": "object", "properties": {"v": {"type": "string", "pattern": "^(a*)*b$"}}}"#,
        )
        .unwrap();
        let set = SchemaSet::load(dir.path()).unwrap();
        let schema = set.get("c", "n").unwrap();
        let hostile = "a".repeat(100_000) + "c";
        assert_eq!(schema.check(&json!({"v": hostile})).len(), 1);
        assert!(schema.check(&json!({"v": "aaab"})).is_empty());
    }

    /// `index.json` names files inside the schema directory only (issue 28, item 11).
    #[test]
    fn schema_files_are_confined_to_the_schema_directory() {
        let outer = tempfile::tempdir().unwrap();
        let dir = outer.path().join("schemas");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(outer.path().join("outside.json"), r#"{"type": "object"}"#).unwrap();
        std::fs::write(dir.join("inside.json"), r#"{"type": "object"}"#).unwrap();
        let absolute = outer.path().join("outside.json");
        for name in [
            "../outside.json",
            "sub/../../outside.json",
            absolute.to_str().unwrap(),
        ] {
            one_type(&dir, name);
            let error = SchemaSet::load(&dir)
                .err()
                .unwrap_or_else(|| panic!("{name} loaded"));
            assert!(
                error.message.contains("leaves the schema directory"),
                "{error}"
            );
        }
        std::os::unix::fs::symlink(outer.path().join("outside.json"), dir.join("link.json"))
            .unwrap();
        one_type(&dir, "link.json");
        let error = SchemaSet::load(&dir).err().expect("a link out is refused");
        assert!(error.message.contains("leads out"), "{error}");
        one_type(&dir, "inside.json");
        assert_eq!(SchemaSet::load(&dir).unwrap().len(), 1);
    }

    /// Look-ups find every type by its own category and name, in a set of many types
    /// loaded in no particular order, and nothing for a near miss.
    #[test]
    fn every_type_is_found_by_its_category_and_name_and_only_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("any.json"), r#"{"type": "object"}"#).unwrap();
        let names = ["b", "a", "ab", "a b", "", "z", "é"];
        let mut types = Vec::new();
        for category in names {
            for name in names.iter().rev() {
                types.push(json!({"category": category, "name": name, "schema": "any.json"}));
            }
        }
        std::fs::write(
            dir.path().join("index.json"),
            json!({ "types": types }).to_string(),
        )
        .unwrap();
        let set = SchemaSet::load(dir.path()).unwrap();
        assert_eq!(set.len(), names.len() * names.len());
        for category in names {
            for name in names {
                let found = set.get(category, name).expect("registered");
                assert_eq!(
                    (found.category.as_str(), found.name.as_str()),
                    (category, name)
                );
            }
        }
        for (category, name) in [
            ("a", "c"),
            ("c", "a"),
            ("a ", "b"),
            ("ab", "b "),
            ("é", "e"),
        ] {
            assert!(set.get(category, name).is_none(), "{category:?} {name:?}");
        }
        let listed: Vec<(&str, &str)> = set
            .types()
            .iter()
            .map(|schema| (schema.category.as_str(), schema.name.as_str()))
            .collect();
        assert!(listed.windows(2).all(|pair| pair[0] < pair[1]), "sorted");
        let shipped = shipped();
        assert!(shipped.get("page interaction", "pageview").is_some());
        assert!(shipped.get("page interaction", "submit").is_none());
    }

    #[test]
    fn keywords_become_snake_case_codes() {
        assert_eq!(snake_case("additionalProperties"), "additional_properties");
        assert_eq!(snake_case("minLength"), "min_length");
        assert_eq!(snake_case("type"), "type");
    }
}
