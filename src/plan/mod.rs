//! The tracking plan drawn from observed traffic: what shape the `data` of one event type
//! really has ([`Observation`]), the JSON Schema (draft 2020-12) that describes it
//! ([`Observation::schema`]), and the properties that events carry but a schema in force does
//! not declare ([`undeclared`]).
//!
//! The fold and the comparison are pure; [`infer`] and [`drift`] feed them from the store,
//! which streams a bounded sample of stored `data` documents (newest first, see
//! `store::observed`) one at a time. The fold runs in Rust rather
//! than in ClickHouse because it must type values exactly as the validator will
//! (`jsonschema` counts `1.0` as an integer, ClickHouse's `JSONType` calls it a `Double`) and
//! walk objects and arrays of any depth, which SQL over a `String` column cannot do without
//! a fixed depth. Memory is bounded by [`Limits`], not by the sample: at most
//! `max_locations` distinct property paths, and at most `max_enum + 1` distinct strings per
//! path.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::store::observed::SampleSpec;
use crate::store::{Store, StoreError};
use crate::validate::schemas::SchemaSet;

/// JSON Schema's instance types (draft 2020-12, §6.1.1), in the order a `type` list names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl JsonType {
    /// The type of `value` as draft 2020-12 sees it: a number with a zero fractional part is
    /// an integer (§6.1.1), so `1.0` is one.
    pub fn of(value: &Value) -> Self {
        match value {
            Value::Null => JsonType::Null,
            Value::Bool(_) => JsonType::Boolean,
            Value::Number(number) => {
                if number.is_i64()
                    || number.is_u64()
                    || number.as_f64().is_some_and(|f| f.fract() == 0.0)
                {
                    JsonType::Integer
                } else {
                    JsonType::Number
                }
            }
            Value::String(_) => JsonType::String,
            Value::Array(_) => JsonType::Array,
            Value::Object(_) => JsonType::Object,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            JsonType::Null => "null",
            JsonType::Boolean => "boolean",
            JsonType::Integer => "integer",
            JsonType::Number => "number",
            JsonType::String => "string",
            JsonType::Array => "array",
            JsonType::Object => "object",
        }
    }
}

/// How inference turns counts into a schema, and what bounds its memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// A property goes into its object's `required` when it appears in at least this share
    /// of the objects at its location (0 < share ≤ 1). Default 0.99: "(nearly) all", so that
    /// one malformed event in a hundred does not keep a property optional.
    pub required_share: f64,
    /// A string property gets an `enum` when it took at most this many distinct values and
    /// each value was seen at least twice on average (so a sample of one or two events does
    /// not freeze its values into the plan). Default 10.
    pub max_enum: usize,
    /// Strings longer than this never count as enum values (ids, free text). Default 64.
    pub max_enum_len: usize,
    /// Distinct property paths tracked in all; later new paths are counted as
    /// `locations_dropped`. Default 1,000.
    pub max_locations: usize,
    /// Objects and arrays nested deeper than this are typed but not looked into. Default 8.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            required_share: 0.99,
            max_enum: 10,
            max_enum_len: 64,
            max_locations: 1000,
            max_depth: 8,
        }
    }
}

/// What was seen at one location (the root, a property path, or an array's elements).
#[derive(Debug, Default, Clone)]
struct Node {
    /// Values seen here.
    count: u64,
    types: BTreeMap<JsonType, u64>,
    /// Object values seen here (the base of `required` for the properties below).
    objects: u64,
    properties: BTreeMap<String, Node>,
    /// Elements of the arrays seen here.
    items: Option<Box<Node>>,
    /// Distinct string values, until there are more than `max_enum` (then `None`).
    strings: Option<BTreeSet<String>>,
}

/// The observed shape of one event type's `data`, folded one document at a time.
#[derive(Debug, Clone)]
pub struct Observation {
    limits: Limits,
    root: Node,
    locations: usize,
    /// Property paths not tracked because `max_locations` was reached.
    pub locations_dropped: u64,
    /// Stored `data` that was not JSON (never expected: it was validated on the way in).
    pub unreadable: u64,
}

impl Observation {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            root: Node::default(),
            locations: 0,
            locations_dropped: 0,
            unreadable: 0,
        }
    }

    /// Documents folded in (readable ones).
    pub fn events(&self) -> u64 {
        self.root.count
    }

    /// Folds in one stored `data` text.
    pub fn add_text(&mut self, data: &str) {
        match serde_json::from_str::<Value>(data) {
            Ok(value) => self.add(&value),
            Err(_) => self.unreadable += 1,
        }
    }

    /// Folds in one `data` document.
    pub fn add(&mut self, value: &Value) {
        let mut budget = Budget {
            left: self.limits.max_locations - self.locations.min(self.limits.max_locations),
            dropped: 0,
        };
        fold(&mut self.root, value, 0, &self.limits, &mut budget);
        self.locations = self.limits.max_locations - budget.left;
        self.locations_dropped += budget.dropped;
    }

    /// The JSON Schema (draft 2020-12) of what was seen, titled `category / name`, ready to be
    /// written into the schema directory. Every location carries an `x-observed` annotation
    /// (see [`X_OBSERVED`]); validators ignore it.
    pub fn schema(&self, category: &str, name: &str, description: &str) -> Value {
        let mut schema = Map::new();
        schema.insert("$schema".into(), json!(DRAFT_2020_12));
        schema.insert("title".into(), json!(format!("{category} / {name}")));
        schema.insert("description".into(), json!(description));
        let body = node_schema(&self.root, self.root.count, &self.limits);
        if let Value::Object(body) = body {
            schema.extend(body);
        }
        Value::Object(schema)
    }
}

/// The dialect every schema of The Eye is written in.
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// The annotation inferred schemas carry at every location: `{"count": n, "share": s}`, the
/// number of values seen there and, for properties outside arrays, the share of sampled
/// events in which the property appears (0–1, four decimals); `types` counts values by JSON
/// type when more than one was seen. An `x-` extension rather than a standard keyword because
/// draft 2020-12 has no keyword for frequencies; unknown keywords are annotations that
/// validators ignore (draft 2020-12 core §6.5).
pub const X_OBSERVED: &str = "x-observed";

struct Budget {
    left: usize,
    dropped: u64,
}

fn fold(node: &mut Node, value: &Value, depth: usize, limits: &Limits, budget: &mut Budget) {
    node.count += 1;
    let kind = JsonType::of(value);
    *node.types.entry(kind).or_default() += 1;
    if depth >= limits.max_depth {
        return;
    }
    match value {
        Value::Object(object) => {
            node.objects += 1;
            for (key, child) in object {
                if !node.properties.contains_key(key) {
                    if budget.left == 0 {
                        budget.dropped += 1;
                        continue;
                    }
                    budget.left -= 1;
                    node.properties.insert(key.clone(), Node::fresh());
                }
                let slot = node.properties.get_mut(key).expect("inserted above");
                fold(slot, child, depth + 1, limits, budget);
            }
        }
        Value::Array(elements) => {
            let items = node.items.get_or_insert_with(|| Box::new(Node::fresh()));
            for element in elements {
                fold(items, element, depth + 1, limits, budget);
            }
        }
        Value::String(text) => {
            if let Some(strings) = &mut node.strings {
                if text.chars().count() > limits.max_enum_len {
                    node.strings = None;
                } else if !strings.contains(text) {
                    strings.insert(text.clone());
                    if strings.len() > limits.max_enum {
                        node.strings = None;
                    }
                }
            }
        }
        _ => {}
    }
}

impl Node {
    fn fresh() -> Self {
        Self {
            strings: Some(BTreeSet::new()),
            ..Self::default()
        }
    }
}

fn share(count: u64, of: u64) -> f64 {
    if of == 0 {
        return 0.0;
    }
    (count as f64 / of as f64 * 10_000.0).round() / 10_000.0
}

/// The schema of one location. `events` is the number of sampled events when the location
/// is outside arrays (the base of `share`), `None` inside them.
fn node_schema(node: &Node, events: u64, limits: &Limits) -> Value {
    node_schema_in(node, Some(events), limits)
}

fn node_schema_in(node: &Node, events: Option<u64>, limits: &Limits) -> Value {
    let mut schema = Map::new();
    let mut types: Vec<JsonType> = node.types.keys().copied().collect();
    // An integer is a number: when both were seen, `number` covers both.
    if types.contains(&JsonType::Number) {
        types.retain(|t| *t != JsonType::Integer);
    }
    match types.as_slice() {
        [] => {}
        [only] => {
            schema.insert("type".into(), json!(only.as_str()));
        }
        many => {
            schema.insert(
                "type".into(),
                Value::Array(many.iter().map(|t| json!(t.as_str())).collect()),
            );
        }
    }
    let mut observed = Map::new();
    observed.insert("count".into(), json!(node.count));
    if let Some(events) = events {
        observed.insert("share".into(), json!(share(node.count, events)));
    }
    if node.types.len() > 1 {
        let by_type: Map<String, Value> = node
            .types
            .iter()
            .map(|(t, n)| (t.as_str().to_owned(), json!(n)))
            .collect();
        observed.insert("types".into(), Value::Object(by_type));
    }
    schema.insert(X_OBSERVED.into(), Value::Object(observed));

    if let Some(strings) = &node.strings {
        let only_strings = node.types.len() == 1 && node.types.contains_key(&JsonType::String);
        let repeated = node.count >= 2 * strings.len() as u64;
        if only_strings && !strings.is_empty() && repeated {
            schema.insert(
                "enum".into(),
                Value::Array(strings.iter().map(|s| json!(s)).collect()),
            );
        }
    }
    if node.objects > 0 && !node.properties.is_empty() {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (key, child) in &node.properties {
            properties.insert(key.clone(), node_schema_in(child, events, limits));
            if child.count as f64 >= limits.required_share * node.objects as f64 {
                required.push(json!(key));
            }
        }
        schema.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            schema.insert("required".into(), Value::Array(required));
        }
    }
    if let Some(items) = &node.items {
        if items.count > 0 {
            schema.insert("items".into(), node_schema_in(items, None, limits));
        }
    }
    Value::Object(schema)
}

/// A property that stored events carry and the schema in force does not declare.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({"field": "data.campaign", "count": 42, "share": 0.42}))]
pub struct Undeclared {
    /// Where, as payload problems name it: `data.campaign`, `data.items[].sku`.
    pub field: String,
    /// Values seen there in the sample.
    pub count: u64,
    /// Share of the sampled events in which it appears (0–1); absent inside arrays.
    pub share: Option<f64>,
}

/// Properties of `observation` that `schema` does not declare, by path.
///
/// A property is declared when the object schema at its location names it in `properties`.
/// Locations the schema leaves open on purpose are not drift: below an `additionalProperties`
/// or `patternProperties` that is a schema (a map whose keys are data, such as a form's
/// fields) nothing is reported. Only `properties` and `items` are followed; a location
/// described through `$ref`, `allOf`, `anyOf` or `oneOf` is not looked into.
pub fn undeclared(schema: &Value, observation: &Observation) -> Vec<Undeclared> {
    let mut found = Vec::new();
    walk(
        schema,
        &observation.root,
        "data",
        Some(observation.events()),
        &mut found,
    );
    found
}

fn walk(schema: &Value, node: &Node, path: &str, events: Option<u64>, found: &mut Vec<Undeclared>) {
    let Some(schema) = schema.as_object() else {
        return; // `true`/`false` schemas declare nothing to compare with.
    };
    if ["$ref", "allOf", "anyOf", "oneOf"]
        .iter()
        .any(|keyword| schema.contains_key(*keyword))
    {
        return;
    }
    let declared = schema.get("properties").and_then(Value::as_object);
    let open_map = schema
        .get("additionalProperties")
        .is_some_and(Value::is_object)
        || schema.contains_key("patternProperties");
    for (key, child) in &node.properties {
        let child_path = format!("{path}.{key}");
        match declared.and_then(|properties| properties.get(key)) {
            Some(child_schema) => walk(child_schema, child, &child_path, events, found),
            None if open_map => {}
            None => found.push(Undeclared {
                field: child_path,
                count: child.count,
                share: events.map(|events| share(child.count, events)),
            }),
        }
    }
    if let (Some(items), Some(items_schema)) = (&node.items, schema.get("items")) {
        walk(items_schema, items, &format!("{path}[]"), None, found);
    }
}

/// A schema drawn from stored events, with what it was drawn from.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = example_inferred_schema)]
pub struct InferredSchema {
    pub category: String,
    pub name: String,
    /// Only events of this application, if one was named (or the key is bound to one).
    pub application: Option<String>,
    /// Events whose `timestamp` is at or after this time, if given.
    #[serde(with = "the_eye_types::micros::option")]
    pub from: Option<DateTime<Utc>>,
    /// Events whose `timestamp` is before this time, if given.
    #[serde(with = "the_eye_types::micros::option")]
    pub to: Option<DateTime<Utc>>,
    /// Events the schema was drawn from: the newest of `events_matching`, at most `limit`.
    pub events_sampled: u64,
    /// Stored events of the type in the range.
    pub events_matching: u64,
    /// Property paths beyond the tracked maximum, left out of the schema.
    pub locations_dropped: u64,
    /// The JSON Schema (draft 2020-12): write it to `schema_file` in the schema directory and
    /// add `index_entry` to its `index.json`, then reload.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// Suggested path of the schema file, relative to the schema directory.
    pub schema_file: String,
    /// The entry for `index.json`'s `types`.
    #[schema(value_type = Object)]
    pub index_entry: Value,
}

/// The example of [`TypeDrift`] in the OpenAPI document.
fn example_type_drift() -> Value {
    json!({
        "category": "form interaction",
        "name": "submit",
        "events_sampled": 100,
        "undeclared": [{"field": "data.campaign", "count": 42, "share": 0.42}],
        "accepted": 108,
        "rejected": 12,
        "rejected_share": 0.1,
        "codes": [{"code": "required", "events": 12, "share": 0.1}],
    })
}

/// The example of [`InferredSchema`] in the OpenAPI document: the README's pageview.
fn example_inferred_schema() -> Value {
    json!({
        "category": "page interaction",
        "name": "pageview",
        "application": null,
        "from": null,
        "to": null,
        "events_sampled": 1,
        "events_matching": 1,
        "locations_dropped": 0,
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "host": {"type": "string", "x-observed": {"count": 1, "share": 1.0}},
                "path": {"type": "string", "x-observed": {"count": 1, "share": 1.0}},
            },
            "required": ["host", "path"],
        },
        "schema_file": "page-interaction/pageview.json",
        "index_entry": {
            "category": "page interaction",
            "name": "pageview",
            "schema": "page-interaction/pageview.json",
        },
    })
}

/// `category/name.json` with both lower-cased and every run of other characters than letters
/// and digits made one `-`, as the shipped schemas are named (`page-interaction/cta-click.json`).
pub fn schema_file(category: &str, name: &str) -> String {
    format!("{}/{}.json", slug(category), slug(name))
}

fn slug(text: &str) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            slug.extend(c.to_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() {
        "type".to_owned()
    } else {
        slug
    }
}

/// Writes `inferred` into the schema directory `dir` (`dir/<schema_file>`) and adds its type
/// to `dir/index.json` (created if missing; an entry for the same type is pointed at the new
/// file). Refuses to overwrite an existing schema file: that is a reviewed plan, and a drawn
/// one should be compared with it, not replace it. Returns the schema file's path. The set
/// is not validated here: the reload does that, and refuses it whole if it does not load.
pub fn write_into(
    dir: &std::path::Path,
    inferred: &InferredSchema,
) -> Result<std::path::PathBuf, String> {
    let file = dir.join(&inferred.schema_file);
    if file.exists() {
        return Err(format!(
            "{} exists; remove it or choose another directory",
            file.display()
        ));
    }
    let index_path = dir.join("index.json");
    let mut index: Value = match std::fs::read_to_string(&index_path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|error| format!("{}: {error}", index_path.display()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => json!({"types": []}),
        Err(error) => return Err(format!("{}: {error}", index_path.display())),
    };
    let types = index
        .get_mut("types")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| format!("{}: no `types` list", index_path.display()))?;
    let same_type = |entry: &Value| {
        entry["category"] == inferred.category.as_str() && entry["name"] == inferred.name.as_str()
    };
    match types.iter_mut().find(|entry| same_type(entry)) {
        Some(entry) => *entry = inferred.index_entry.clone(),
        None => types.push(inferred.index_entry.clone()),
    }
    let pretty = |value: &Value| {
        let mut text = serde_json::to_string_pretty(value).expect("JSON values serialise");
        text.push('\n');
        text
    };
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| format!("{}: {error}", parent.display()))?;
    }
    std::fs::write(&file, pretty(&inferred.schema))
        .map_err(|error| format!("{}: {error}", file.display()))?;
    std::fs::write(&index_path, pretty(&index))
        .map_err(|error| format!("{}: {error}", index_path.display()))?;
    Ok(file)
}

/// Draws the schema of one event type from a sample of its stored events.
pub async fn infer(
    store: &Store,
    spec: &SampleSpec,
    limits: Limits,
) -> Result<InferredSchema, StoreError> {
    let mut observation = Observation::new(limits);
    let events_matching = store.count_matching(spec).await?;
    store
        .sample_data(spec, |data| observation.add_text(data))
        .await?;
    let description = format!(
        "Drawn by `the-eye schemas infer` on {} from the newest {} of {} stored events of this \
         type{}. `x-observed` gives, at each location, the values seen and the share of events \
         in which it appears; `required` lists the properties present in at least {}% of the \
         objects at their location. Review before use.",
        Utc::now().format("%Y-%m-%d"),
        observation.events(),
        events_matching,
        spec.application
            .as_deref()
            .map(|application| format!(" of application `{application}`"))
            .unwrap_or_default(),
        limits.required_share * 100.0,
    );
    let schema_file = schema_file(&spec.category, &spec.name);
    Ok(InferredSchema {
        category: spec.category.clone(),
        name: spec.name.clone(),
        application: spec.application.clone(),
        from: spec.from,
        to: spec.to,
        events_sampled: observation.events(),
        events_matching,
        locations_dropped: observation.locations_dropped,
        schema: observation.schema(&spec.category, &spec.name, &description),
        index_entry: json!({"category": spec.category, "name": spec.name, "schema": schema_file}),
        schema_file,
    })
}

/// Drift of the event types that have a schema, over a period.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"application": "web-shop", "from": "2026-11-23T00:00:00.000000Z", "to": "2026-11-30T00:00:00.000000Z", "types": [example_type_drift()]}))]
pub struct DriftReport {
    pub application: Option<String>,
    /// Start of the period (inclusive).
    #[serde(with = "the_eye_types::micros")]
    pub from: DateTime<Utc>,
    /// End of the period (exclusive).
    #[serde(with = "the_eye_types::micros")]
    pub to: DateTime<Utc>,
    /// Every event type with a schema in force, sorted by category and name.
    pub types: Vec<TypeDrift>,
}

/// Drift of one event type.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = example_type_drift)]
pub struct TypeDrift {
    pub category: String,
    pub name: String,
    /// Accepted events of the type whose `timestamp` is in the period, newest first, that
    /// `undeclared` was computed from (at most the `limit` asked).
    pub events_sampled: u64,
    /// Properties those events carry that the schema does not declare, by path.
    pub undeclared: Vec<Undeclared>,
    /// Events of the type received in the period and accepted.
    pub accepted: u64,
    /// Events of the type received in the period and rejected.
    pub rejected: u64,
    /// `rejected / (accepted + rejected)`, 0–1; 0 without events.
    pub rejected_share: f64,
    /// Rejected events by problem code, most first; an event with two problems of different
    /// codes counts under both.
    pub codes: Vec<CodeShare>,
}

/// Rejections of one problem code.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"code": "required", "events": 12, "share": 0.1}))]
pub struct CodeShare {
    pub code: String,
    /// Rejected events with at least one problem of this code.
    pub events: u64,
    /// `events / (accepted + rejected)` of the type, 0–1.
    pub share: f64,
}

/// Drift of every type in `schemas`: undeclared properties in a sample of up to `limit`
/// accepted events per type (by `timestamp` in [`from`, `to`)), and rejected shares of the
/// events received in [`from`, `to`).
pub async fn drift(
    store: &Store,
    schemas: &SchemaSet,
    application: Option<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u32,
) -> Result<DriftReport, StoreError> {
    let outcomes = store
        .type_outcomes(application.as_deref(), from, to)
        .await?;
    let mut types = Vec::new();
    for schema in schemas.types() {
        let spec = SampleSpec {
            category: schema.category.clone(),
            name: schema.name.clone(),
            application: application.clone(),
            from: Some(from),
            to: Some(to),
            limit,
        };
        let mut observation = Observation::new(Limits::default());
        store
            .sample_data(&spec, |data| observation.add_text(data))
            .await?;
        let outcome = outcomes
            .iter()
            .find(|o| o.category == schema.category && o.name == schema.name);
        let (accepted, rejected) = outcome.map_or((0, 0), |o| (o.accepted, o.rejected));
        let total = accepted + rejected;
        types.push(TypeDrift {
            category: schema.category.clone(),
            name: schema.name.clone(),
            events_sampled: observation.events(),
            undeclared: undeclared(&schema.document, &observation),
            accepted,
            rejected,
            rejected_share: share(rejected, total),
            codes: outcome
                .map(|o| {
                    o.codes
                        .iter()
                        .map(|(code, events)| CodeShare {
                            code: code.clone(),
                            events: *events,
                            share: share(*events, total),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(DriftReport {
        application,
        from,
        to,
        types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe(documents: &[Value]) -> Observation {
        let mut observation = Observation::new(Limits::default());
        for document in documents {
            observation.add(document);
        }
        observation
    }

    #[test]
    fn types_shares_required_and_nesting() {
        let mut documents = Vec::new();
        for i in 0..100 {
            let mut data = json!({
                "host": "www.example.com",
                "path": format!("/page/{i}"),
                "form": {"first_name": "Ann", "age": i},
                "score": if i % 2 == 0 { json!(1.5) } else { json!(2) },
            });
            if i < 10 {
                data["referrer"] = json!(null);
            }
            documents.push(data);
        }
        documents.push(json!({"host": "shop.example.com", "path": "/", "form": {"first_name": "Bo", "age": 1.0}, "score": 3}));
        let schema = observe(&documents).schema("c", "n", "d");
        assert_eq!(schema["$schema"], DRAFT_2020_12);
        assert_eq!(schema["title"], "c / n");
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["form", "host", "path", "score"]));
        let properties = &schema["properties"];
        assert_eq!(properties["host"]["type"], "string");
        assert_eq!(
            properties["host"]["enum"],
            json!(["shop.example.com", "www.example.com"])
        );
        assert!(
            properties["path"].get("enum").is_none(),
            "101 distinct paths"
        );
        assert_eq!(properties["score"]["type"], "number");
        assert_eq!(
            properties["form"]["properties"]["age"]["type"], "integer",
            "1.0 is an integer"
        );
        assert_eq!(properties["form"]["required"], json!(["age", "first_name"]));
        assert_eq!(properties["referrer"]["type"], "null");
        assert_eq!(properties["referrer"][X_OBSERVED]["share"], json!(0.099));
        assert_eq!(properties["referrer"][X_OBSERVED]["count"], 10);
        assert_eq!(properties["host"][X_OBSERVED]["share"], json!(1.0));
        assert_eq!(
            properties["score"][X_OBSERVED]["types"],
            json!({"integer": 51, "number": 50})
        );
    }

    #[test]
    fn a_few_events_give_no_enum_and_arrays_get_items() {
        let schema = observe(&[json!({"tags": ["a", "b"], "kind": "x"})]).schema("c", "n", "d");
        assert!(schema["properties"]["kind"].get("enum").is_none());
        assert_eq!(schema["properties"]["tags"]["type"], "array");
        assert_eq!(schema["properties"]["tags"]["items"]["type"], "string");
        assert!(schema["properties"]["tags"]["items"][X_OBSERVED]
            .get("share")
            .is_none());
    }

    #[test]
    fn schema_files_are_named_like_the_shipped_ones() {
        assert_eq!(
            schema_file("page interaction", "cta click"),
            "page-interaction/cta-click.json"
        );
        assert_eq!(
            schema_file("Form  Interaction!", "../submit"),
            "form-interaction/submit.json"
        );
        assert_eq!(schema_file("", "?"), "type/type.json");
    }

    #[test]
    fn locations_are_bounded() {
        let limits = Limits {
            max_locations: 3,
            ..Limits::default()
        };
        let mut observation = Observation::new(limits);
        observation.add(&json!({"a": 1, "b": 2}));
        observation.add(&json!({"c": 3, "d": 4, "a": 5}));
        assert_eq!(observation.locations_dropped, 1);
        let schema = observation.schema("c", "n", "d");
        let keys: Vec<_> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b", "c"]);
        observation.add_text("not json");
        assert_eq!(observation.unreadable, 1);
    }

    #[test]
    fn undeclared_properties_are_listed_and_open_maps_are_not() {
        let schema = json!({
            "type": "object",
            "properties": {
                "host": {"type": "string"},
                "form": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {}}}},
                "meta": {"type": "object", "properties": {"a": {}}}
            }
        });
        let observation = observe(&[
            json!({"host": "h", "campaign": "x", "form": {"email": "e"}, "items": [{"sku": 1, "qty": 2}], "meta": {"a": 1, "b": 2}}),
            json!({"host": "h"}),
        ]);
        let found = undeclared(&schema, &observation);
        let fields: Vec<_> = found.iter().map(|u| u.field.as_str()).collect();
        assert_eq!(fields, ["data.campaign", "data.items[].qty", "data.meta.b"]);
        assert_eq!(found[0].share, Some(0.5));
        assert_eq!(found[1].share, None);
    }
}
