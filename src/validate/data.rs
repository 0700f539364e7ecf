//! [`Data`]: an event's `data` as read, a JSON tree whose keys and strings borrow the body's
//! text, and what validation needs of it — a representation `jsonschema` validates
//! ([`DataJson`]), conversions from and to `serde_json::Value`.
//!
//! Every event's `data` is read, rewritten by the personal-data rules, checked against its
//! schema, written back to text for its row and freed. As a `serde_json::Value` each key and
//! each string of it was a `String` of its own and each object a `BTreeMap`. Here a key or a
//! string is borrowed from the body unless it holds an escape, and an object is one vector
//! of members: for the usual flat `data`, one allocation instead of seven or more. Per event
//! of a batch, building it went from ~3,150 instructions to ~2,630, freeing it from ~720 to
//! ~290, and checking it against its schema from ~1,250 to ~740 (BENCHMARKS.md, "Twelfth
//! session").
//!
//! An object's members are kept sorted by name, byte-wise, each name once: the order
//! `serde_json::Map` keeps. So every walk over `data` (the detector's, the schema's errors,
//! the written text) sees the members in the order it saw in a `Value`, and what is stored,
//! counted and answered is unchanged (a test holds conversions both ways to that).

use std::borrow::Cow;

use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde::{Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// One JSON value of an event's `data`.
#[derive(Debug, Clone, PartialEq)]
pub enum Data<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Data<'a>>),
    Object(Members<'a>),
}

/// An object's members, sorted by name (byte-wise), each name once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Members<'a>(Vec<(Cow<'a, str>, Data<'a>)>);

impl<'a> Data<'a> {
    /// `value` as a tree that borrows its keys and strings.
    pub fn borrowed(value: &'a Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(boolean) => Self::Bool(*boolean),
            Value::Number(number) => Self::Number(number.clone()),
            Value::String(text) => Self::String(Cow::Borrowed(text)),
            Value::Array(elements) => Self::Array(elements.iter().map(Self::borrowed).collect()),
            // A map's members are already sorted by name and unique.
            Value::Object(object) => Self::Object(Members(
                object
                    .iter()
                    .map(|(name, value)| (Cow::Borrowed(name.as_str()), Self::borrowed(value)))
                    .collect(),
            )),
        }
    }

    /// The same value as a `serde_json::Value`.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(boolean) => Value::Bool(*boolean),
            Self::Number(number) => Value::Number(number.clone()),
            Self::String(text) => Value::String(text.as_ref().to_owned()),
            Self::Array(elements) => Value::Array(elements.iter().map(Self::to_value).collect()),
            Self::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(name, value)| (name.to_owned(), value.to_value()))
                    .collect(),
            ),
        }
    }

    /// The same value as a `serde_json::Value`, moving what is owned.
    pub fn into_value(self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(boolean) => Value::Bool(boolean),
            Self::Number(number) => Value::Number(number),
            Self::String(text) => Value::String(text.into_owned()),
            Self::Array(elements) => {
                Value::Array(elements.into_iter().map(Self::into_value).collect())
            }
            Self::Object(members) => Value::Object(
                members
                    .0
                    .into_iter()
                    .map(|(name, value)| (name.into_owned(), value.into_value()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }

    /// `value`'s tree, owning everything: for rewriting a `Value` by the rules written for
    /// [`Data`], then [`Data::into_value`].
    pub fn owned(value: Value) -> Data<'static> {
        match value {
            Value::Null => Data::Null,
            Value::Bool(boolean) => Data::Bool(boolean),
            Value::Number(number) => Data::Number(number),
            Value::String(text) => Data::String(Cow::Owned(text)),
            Value::Array(elements) => Data::Array(elements.into_iter().map(Data::owned).collect()),
            Value::Object(object) => Data::Object(Members(
                object
                    .into_iter()
                    .map(|(name, value)| (Cow::Owned(name), Data::owned(value)))
                    .collect(),
            )),
        }
    }

    /// The JSON type, as problem messages name it (`an object`, `a string`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Number(_) => "a number",
            Self::String(_) => "a string",
            Self::Array(_) => "an array",
            Self::Object(_) => "an object",
        }
    }
}

impl<'a> Members<'a> {
    /// Members in any order, each name once (the reader drops repeated names, noting them).
    pub(crate) fn from_unique(mut members: Vec<(Cow<'a, str>, Data<'a>)>) -> Self {
        // Insertion sort for the few members of most objects.
        members.sort_unstable_by(|(a, _), (b, _)| a.as_ref().cmp(b.as_ref()));
        Self(members)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(member, _)| member.as_ref().cmp(name))
    }

    /// The value of member `name`.
    pub fn get(&self, name: &str) -> Option<&Data<'a>> {
        let at = self.position(name).ok()?;
        Some(&self.0[at].1)
    }

    /// The value of member `name`, to change it.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Data<'a>> {
        let at = self.position(name).ok()?;
        Some(&mut self.0[at].1)
    }

    /// Removes member `name`.
    pub fn remove(&mut self, name: &str) -> Option<Data<'a>> {
        let at = self.position(name).ok()?;
        Some(self.0.remove(at).1)
    }

    /// Names and values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Data<'a>)> {
        self.0.iter().map(|(name, value)| (name.as_ref(), value))
    }

    /// Names and values to change, by name.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Data<'a>)> {
        fn text<'x>(name: &'x mut Cow<'_, str>) -> &'x str {
            name
        }
        self.0.iter_mut().map(|(name, value)| (text(name), value))
    }

    /// Values, by name.
    pub fn values(&self) -> impl Iterator<Item = &Data<'a>> {
        self.0.iter().map(|(_, value)| value)
    }

    /// Values to change, by name.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Data<'a>> {
        self.0.iter_mut().map(|(_, value)| value)
    }
}

/// As `serde_json::Value` serialises: `validator`'s derive needs it of the fields it checks.
impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Bool(boolean) => serializer.serialize_bool(*boolean),
            Self::Number(number) => number.serialize(serializer),
            Self::String(text) => serializer.serialize_str(text),
            Self::Array(elements) => serializer.collect_seq(elements),
            Self::Object(members) => members.serialize(serializer),
        }
    }
}

impl Serialize for Members<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

/// [`Data`] as an instance `jsonschema` validates (`jsonschema::options_for::<DataJson>()`),
/// with the semantics of its own `serde_json::Value` representation: the same members in the
/// same order, the same numbers, the same look-up policy, so the same errors in the same order.
pub struct DataJson;

impl Json for DataJson {
    type Node<'a> = &'a Data<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    // As for `serde_json::Value` (a sorted map): a look-up compares keys.
    const KEYS_PER_LOOKUP: usize = 2;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(Self::Node<'_>) -> T) -> T {
        f(&Data::String(Cow::Borrowed(string)))
    }
}

impl<'a> Node<'a, DataJson> for &'a Data<'a> {
    type Object = &'a Members<'a>;
    type Array = &'a [Data<'a>];
    type Number = &'a Number;

    fn as_object(&self) -> Option<&'a Members<'a>> {
        match self {
            Data::Object(members) => Some(members),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&'a [Data<'a>]> {
        match self {
            Data::Array(elements) => Some(elements),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self {
            Data::String(text) => Some(Cow::Borrowed(text.as_ref())),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self {
            Data::Number(number) => Some(number),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self {
            Data::Bool(boolean) => Some(*boolean),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Data::Null)
    }

    fn json_type(&self) -> JsonType {
        match self {
            Data::Null => JsonType::Null,
            Data::Bool(_) => JsonType::Boolean,
            Data::Number(_) => JsonType::Number,
            Data::String(_) => JsonType::String,
            Data::Array(_) => JsonType::Array,
            Data::Object(_) => JsonType::Object,
        }
    }

    fn string_length_within(&self, min: u64, max: u64) -> Option<bool> {
        let Data::String(text) = self else {
            return None;
        };
        // A code point takes one to four bytes: the byte length alone often decides.
        let bytes = text.len() as u64;
        if bytes < min || bytes.div_ceil(4) > max {
            return Some(false);
        }
        if min <= bytes.div_ceil(4) && bytes <= max {
            return Some(true);
        }
        Some((min..=max).contains(&(text.chars().count() as u64)))
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(Data::to_value(self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(
            std::ptr::from_ref::<Data<'a>>(*self) as usize
        ))
    }
}

/// [`Members::iter`] as `jsonschema` walks it.
pub struct MembersIter<'a>(std::slice::Iter<'a, (Cow<'a, str>, Data<'a>)>);

impl<'a> Iterator for MembersIter<'a> {
    type Item = (&'a str, &'a Data<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(name, value)| (name.as_ref(), value))
    }
}

impl<'a> Object<'a, DataJson> for &'a Members<'a> {
    type Node = &'a Data<'a>;
    type MemberName = &'a str;
    type MembersIter = MembersIter<'a>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, key: &String) -> Option<&'a Data<'a>> {
        Members::get(self, key)
    }

    fn members(&self) -> MembersIter<'a> {
        MembersIter(self.0.iter())
    }
}

impl<'a> Array<'a, DataJson> for &'a [Data<'a>] {
    type Node = &'a Data<'a>;
    type ElementsIter = std::slice::Iter<'a, Data<'a>>;

    fn len(&self) -> usize {
        <[Data<'a>]>::len(self)
    }

    fn elements(&self) -> std::slice::Iter<'a, Data<'a>> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_go_to_data_and_back_unchanged_and_members_stay_sorted() {
        let value = json!({
            "z": [1, -2, 1.5, "s", null, true, {"b": {}, "a": []}],
            "a": "é\"\\", "": {"y": 1, "x": 2}, "m": 18446744073709551615u64
        });
        let data = Data::borrowed(&value);
        assert_eq!(data.to_value(), value);
        assert_eq!(data.clone().into_value(), value);
        assert_eq!(Data::owned(value.clone()), data);
        let Data::Object(members) = &data else {
            panic!("an object")
        };
        let names: Vec<&str> = members.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["", "a", "m", "z"]);
        assert_eq!(members.get("m"), Some(&Data::Number(u64::MAX.into())));
        assert!(members.get("b").is_none());
        let unsorted = Members::from_unique(vec![
            (Cow::Borrowed("b"), Data::Null),
            (Cow::Borrowed("a"), Data::Bool(true)),
        ]);
        assert_eq!(
            Data::Object(unsorted).to_value(),
            json!({"a": true, "b": null})
        );
    }
}
