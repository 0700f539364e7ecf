//! The `x-pii` keyword of payload schemas: which properties of a type's `data` are personal
//! data, and what becomes of them before anything is stored (docs/personal-data.md).
//!
//! [`PiiRules::parse`] reads the keyword from a schema document when the schema set is loaded
//! and refuses, with the JSON pointer of the place, a value that is not `drop`, `hash` or
//! `mask`, a keyword where it would not be applied (inside `oneOf`, `$defs`, …), a dropped
//! property that is also `required`, and a hashed or masked one whose `type` does not allow
//! the string it becomes. [`PiiRules::apply`] then rewrites a parsed `data` value in place;
//! it is pure apart from the key it is given.

use std::borrow::Cow;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::data::{Data, Members};

/// The HMAC key of `x-pii: hash`, held as HMAC-SHA-256 state already keyed (RFC 2104's
/// inner and outer pads hashed once), so that each hash clones it instead of keying again:
/// keying cost about half of each hash. `Debug` prints nothing of it.
#[derive(Clone)]
pub struct HashKey(Arc<Hmac<Sha256>>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(***)")
    }
}

impl HashKey {
    /// A key of these bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        // HMAC takes a key of any length (RFC 2104): `new_from_slice` cannot fail for it.
        let Ok(mac) = Hmac::<Sha256>::new_from_slice(&bytes) else {
            unreachable!("HMAC accepts keys of every length")
        };
        Self(Arc::new(mac))
    }

    /// Lowercase hex HMAC-SHA-256 of `text` under this key: 64 characters.
    pub fn hash(&self, text: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut mac = (*self.0).clone();
        mac.update(text.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(2 * digest.len());
        for byte in digest {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        hex
    }
}

/// What happens to a property marked `"x-pii"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiAction {
    /// `"drop"`: the property is removed (an array element marked through `items` too).
    Drop,
    /// `"hash"`: replaced by the lowercase hex HMAC-SHA-256 (64 characters) of its text under
    /// the deployment's key (see [`HashKey`]): equal values still join across events.
    Hash,
    /// `"mask"`: replaced by a string that keeps its shape only (see [`mask`]).
    Mask,
}

impl PiiAction {
    /// The keyword's value: `drop`, `hash` or `mask`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Hash => "hash",
            Self::Mask => "mask",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "drop" => Some(Self::Drop),
            "hash" => Some(Self::Hash),
            "mask" => Some(Self::Mask),
            _ => None,
        }
    }
}

/// Characters of a stored hash (hex of 32 bytes).
pub const HASH_CHARS: u64 = 64;

/// The keyword's name in a schema.
pub const KEYWORD: &str = "x-pii";

/// One level of the rules: the action on this value, and the rules of its properties and
/// array elements.
#[derive(Debug, Default, Clone, PartialEq)]
struct Node {
    action: Option<PiiAction>,
    properties: Vec<(String, Node)>,
    items: Option<Box<Node>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.action.is_none() && self.properties.is_empty() && self.items.is_none()
    }
}

/// The personal-data rules of one event type's `data`, compiled from its schema.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PiiRules {
    root: Node,
    /// Names of every property with a rule, for [`PiiRules::names`].
    names: Vec<String>,
    uses_hash: bool,
}

impl PiiRules {
    /// Reads every `x-pii` of `schema`. The keyword is applied where it marks a property (in
    /// `properties`, at any depth) or the elements of an array (`items`); anywhere else it
    /// would be silently ignored, so it is refused. `Err` is a message naming the JSON pointer.
    pub fn parse(schema: &Value) -> Result<Self, String> {
        let mut rules = Self::default();
        rules.root = walk(schema, "", true, &mut rules)?;
        if rules.root.action.is_some() {
            return Err(format!(
                "`{KEYWORD}` at the schema's root would apply to the whole of `data`; mark its properties instead"
            ));
        }
        rules.names.sort();
        rules.names.dedup();
        Ok(rules)
    }

    /// Whether the schema marks nothing.
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// Whether some property is hashed (the deployment then needs a key).
    pub fn uses_hash(&self) -> bool {
        self.uses_hash
    }

    /// The names of the marked properties (without their path), sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Rewrites `data` in place by the rules; `key` hashes.
    pub fn apply(&self, data: &mut Value, key: &HashKey) {
        let mut tree = Data::owned(std::mem::take(data));
        self.apply_data(&mut tree, key);
        *data = tree.into_value();
    }

    /// [`Self::apply`] on `data` as the request path reads it.
    pub fn apply_data(&self, data: &mut Data<'_>, key: &HashKey) {
        apply_node(&self.root, data, key);
    }

    /// [`Self::apply`] on the members of an object `data` as the request path reads it.
    pub fn apply_members(&self, data: &mut Members<'_>, key: &HashKey) {
        apply_object(&self.root, data, key);
    }
}

/// Keywords whose subschemas are applied to this very instance or to others than a marked
/// property or array element: an `x-pii` under them is refused.
const OTHER_SUBSCHEMAS: [&str; 16] = [
    "$defs",
    "definitions",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "patternProperties",
    "additionalProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "prefixItems",
    "contains",
];

fn walk(
    schema: &Value,
    pointer: &str,
    applied: bool,
    rules: &mut PiiRules,
) -> Result<Node, String> {
    let Value::Object(object) = schema else {
        return Ok(Node::default());
    };
    let mut node = Node::default();
    if let Some(value) = object.get(KEYWORD) {
        let at = if pointer.is_empty() { "/" } else { pointer };
        if !applied {
            return Err(format!(
                "`{KEYWORD}` at {at} is not applied there: mark a property in `properties` or the elements of an array in `items`"
            ));
        }
        let action = value.as_str().and_then(PiiAction::parse).ok_or_else(|| {
            format!("`{KEYWORD}` at {at} is {value}; expected one of \"drop\", \"hash\", \"mask\"")
        })?;
        if action != PiiAction::Drop && !allows_string(object.get("type")) {
            return Err(format!(
                "`{KEYWORD}: {}` at {at} stores a string, which its `type` does not allow; add \"string\" to `type`",
                action.as_str()
            ));
        }
        let bound = |name: &str| object.get(name).and_then(Value::as_u64);
        if action == PiiAction::Hash
            && (bound("maxLength").is_some_and(|max| max < HASH_CHARS)
                || bound("minLength").is_some_and(|min| min > HASH_CHARS))
        {
            return Err(format!(
                "`{KEYWORD}: hash` at {at} stores {HASH_CHARS} hex characters, which its `minLength` or `maxLength` refuses"
            ));
        }
        rules.uses_hash |= action == PiiAction::Hash;
        node.action = Some(action);
    }
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(Value::Object(properties)) = object.get("properties") {
        for (name, sub) in properties {
            let child_pointer = format!("{pointer}/properties/{}", escape(name));
            let child = walk(sub, &child_pointer, applied, rules)?;
            if child.action == Some(PiiAction::Drop) && required.contains(&name.as_str()) {
                return Err(format!(
                    "`{KEYWORD}: drop` at {child_pointer} removes a property that `required` asks for; every event would be rejected"
                ));
            }
            if child.action.is_some() {
                rules.names.push(name.clone());
            }
            if !child.is_empty() {
                node.properties.push((name.clone(), child));
            }
        }
    }
    if let Some(items) = object.get("items") {
        let child = walk(items, &format!("{pointer}/items"), applied, rules)?;
        if !child.is_empty() {
            node.items = Some(Box::new(child));
        }
    }
    for keyword in OTHER_SUBSCHEMAS {
        let at = format!("{pointer}/{keyword}");
        match object.get(keyword) {
            Some(Value::Array(subs)) => {
                for (index, sub) in subs.iter().enumerate() {
                    walk(sub, &format!("{at}/{index}"), false, rules)?;
                }
            }
            Some(Value::Object(subs))
                if matches!(
                    keyword,
                    "$defs" | "definitions" | "dependentSchemas" | "patternProperties"
                ) =>
            {
                for (name, sub) in subs {
                    walk(sub, &format!("{at}/{}", escape(name)), false, rules)?;
                }
            }
            Some(sub) => {
                walk(sub, &at, false, rules)?;
            }
            None => {}
        }
    }
    Ok(node)
}

/// Whether a `type` keyword (absent, a name, or a list of names) lets a string through.
fn allows_string(kind: Option<&Value>) -> bool {
    match kind {
        None => true,
        Some(Value::String(name)) => name == "string",
        Some(Value::Array(names)) => names.iter().any(|name| name == "string"),
        Some(_) => false,
    }
}

/// A property name as a JSON pointer token (RFC 6901).
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn apply_node(node: &Node, value: &mut Data<'_>, key: &HashKey) {
    match value {
        Data::Object(object) => apply_object(node, object, key),
        Data::Array(elements) => {
            if let Some(items) = &node.items {
                if items.action == Some(PiiAction::Drop) {
                    elements.clear();
                    return;
                }
                for element in elements {
                    transform(items, element, key);
                }
            }
        }
        _ => {}
    }
}

fn apply_object(node: &Node, object: &mut Members<'_>, key: &HashKey) {
    for (name, child) in &node.properties {
        apply_property(object, name, child, key);
    }
}

fn apply_property(object: &mut Members<'_>, name: &str, child: &Node, key: &HashKey) {
    if child.action == Some(PiiAction::Drop) {
        object.remove(name);
        return;
    }
    if let Some(value) = object.get_mut(name) {
        transform(child, value, key);
    }
}

fn transform(node: &Node, value: &mut Data<'_>, key: &HashKey) {
    match node.action {
        Some(action) => transform_value(action, value, key),
        None => apply_node(node, value, key),
    }
}

/// Hashes or masks a string or a number (which becomes a string). A value of another kind
/// is one the schema will refuse (a marked property must allow strings, see
/// [`PiiRules::parse`]): an array's elements and an object's values are transformed
/// one by one, so that it is still refused for its kind, with nothing personal left in the
/// rejection; `true`, `false` and `null` hold nothing to hide and are kept.
fn transform_value(action: PiiAction, value: &mut Data<'_>, key: &HashKey) {
    match value {
        Data::String(text) if action == PiiAction::Hash => *text = Cow::Owned(key.hash(text)),
        Data::Number(number) if action == PiiAction::Hash => {
            *value = Data::String(Cow::Owned(key.hash(&number.to_string())));
        }
        Data::String(_) | Data::Number(_) => *value = Data::String(Cow::Owned(mask_data(value))),
        Data::Array(elements) => {
            for element in elements {
                transform_value(action, element, key);
            }
        }
        Data::Object(members) => {
            for member in members.values_mut() {
                transform_value(action, member, key);
            }
        }
        Data::Bool(_) | Data::Null => {}
    }
}

/// The masked form of a value, exactly:
/// - a string with one `@` between a non-empty local part and a domain (an e-mail address):
///   `***@` and the domain as sent (`jane.doe@example.com` → `***@example.com`);
/// - a string or a number holding at least 6 digits (a phone, card or account number): every
///   digit but the last four becomes `*`, everything else is kept
///   (`+44 20 7946 0958` → `+** ** **** 0958`, `4111111111111111` → `************1111`);
/// - any other string or number (a name, a short code): `***`, nothing kept;
/// - anything else (not a string or a number): `***` (see [`transform_value`] for what the
///   rules do with such values).
pub fn mask(value: &Value) -> String {
    mask_data(&Data::borrowed(value))
}

/// [`mask`] of a value as the request path reads it.
fn mask_data(value: &Data<'_>) -> String {
    let text = match value {
        Data::String(text) => text.as_ref(),
        Data::Number(number) => return mask_digits(&number.to_string()).unwrap_or_else(stars),
        _ => return stars(),
    };
    if let Some(domain) = email_domain(text) {
        return format!("***@{domain}");
    }
    mask_digits(text).unwrap_or_else(stars)
}

fn stars() -> String {
    "***".to_owned()
}

/// The domain of an e-mail-shaped string: one `@`, something before it, a dot after it.
fn email_domain(text: &str) -> Option<&str> {
    let (local, domain) = text.split_once('@')?;
    (!local.is_empty() && domain.contains('.') && !domain.contains('@')).then_some(domain)
}

/// `text` with every digit but the last four replaced by `*`, if it holds at least 6 digits.
pub fn mask_digits(text: &str) -> Option<String> {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    if digits < 6 {
        return None;
    }
    let mut left = digits - 4;
    Some(
        text.chars()
            .map(|c| {
                if c.is_ascii_digit() && left > 0 {
                    left -= 1;
                    '*'
                } else {
                    c
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key() -> HashKey {
        HashKey::new(b"a test key of at least sixteen bytes".to_vec())
    }

    #[test]
    fn drop_hash_and_mask_apply_at_any_depth() {
        let schema = json!({
            "type": "object",
            "properties": {
                "form": {"type": "object", "properties": {
                    "first_name": {"type": "string", "x-pii": "hash"},
                    "note": {"x-pii": "drop"},
                    "email": {"type": ["string", "null"], "x-pii": "mask"}
                }},
                "phones": {"type": "array", "items": {"x-pii": "mask"}},
                "x-pii": {"type": "string"}
            }
        });
        let rules = PiiRules::parse(&schema).unwrap();
        assert!(rules.uses_hash());
        assert_eq!(rules.names(), ["email", "first_name", "note"]);
        let mut data = json!({
            "form": {"first_name": "John", "note": "call me", "email": "jane@example.com", "other": 1},
            "phones": ["+44 20 7946 0958", 4111111111111111_u64, "no"],
            "x-pii": "a property named like the keyword is data"
        });
        rules.apply(&mut data, &key());
        let hashed = data["form"]["first_name"].as_str().unwrap();
        assert_eq!(hashed.len(), 64);
        assert!(hashed.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(data["form"].get("note").is_none());
        assert_eq!(data["form"]["email"], "***@example.com");
        assert_eq!(data["form"]["other"], 1);
        assert_eq!(
            data["phones"],
            json!(["+** ** **** 0958", "************1111", "***"])
        );
        assert_eq!(data["x-pii"], "a property named like the keyword is data");
        // Same value, same key: same hash; another key: another hash.
        let mut again = json!({"form": {"first_name": "John"}});
        rules.apply(&mut again, &key());
        assert_eq!(again["form"]["first_name"], hashed);
        let mut other = json!({"form": {"first_name": "John"}});
        rules.apply(
            &mut other,
            &HashKey::new(b"another key of sixteen bytes+".to_vec()),
        );
        assert_ne!(other["form"]["first_name"], hashed);
        // A null stays null; a value of the wrong kind stays of its kind, its strings hashed,
        // so that validation still refuses it and the rejection holds nothing personal.
        let mut odd = json!({"form": {"email": null, "first_name": ["John", {"n": "Doe"}, true]}});
        rules.apply(&mut odd, &key());
        assert_eq!(odd["form"]["email"], Value::Null);
        assert_eq!(
            odd["form"]["first_name"],
            json!([key().hash("John"), {"n": key().hash("Doe")}, true])
        );
    }

    #[test]
    fn bad_keywords_are_refused_with_their_place() {
        for (schema, expected) in [
            (
                json!({"properties": {"a": {"x-pii": "encrypt"}}}),
                "/properties/a is \"encrypt\"",
            ),
            (
                json!({"properties": {"a": {"x-pii": true}}}),
                "expected one of",
            ),
            (
                json!({"oneOf": [{"properties": {"a": {"x-pii": "drop"}}}]}),
                "/oneOf/0/properties/a is not applied",
            ),
            (
                json!({"$defs": {"n": {"x-pii": "hash"}}}),
                "/$defs/n is not applied",
            ),
            (
                json!({"required": ["a"], "properties": {"a": {"x-pii": "drop"}}}),
                "`required` asks for",
            ),
            (
                json!({"properties": {"a": {"type": "integer", "x-pii": "hash"}}}),
                "does not allow",
            ),
            (json!({"x-pii": "drop"}), "root"),
            (
                json!({"properties": {"a": {"maxLength": 10, "x-pii": "hash"}}}),
                "maxLength",
            ),
        ] {
            let error = PiiRules::parse(&schema).unwrap_err();
            assert!(error.contains(expected), "{error} lacks {expected}");
        }
        assert!(
            PiiRules::parse(&json!({"properties": {"a": {"type": "string"}}}))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn masks_keep_exactly_what_the_docs_say() {
        assert_eq!(mask(&json!("jane.doe@example.com")), "***@example.com");
        assert_eq!(mask(&json!("John")), "***");
        assert_eq!(mask(&json!("12345")), "***");
        assert_eq!(mask(&json!("4111 1111 1111 1111")), "**** **** **** 1111");
        assert_eq!(mask(&json!(true)), "***");
        assert_eq!(mask(&json!({"a": 1})), "***");
    }

    /// RFC 4231 test case 2: the key is used as HMAC-SHA-256 says.
    #[test]
    fn hashes_are_hmac_sha_256() {
        assert_eq!(
            HashKey::new(b"Jefe".to_vec()).hash("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
