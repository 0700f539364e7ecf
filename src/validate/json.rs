//! Reading an ingest body into events, strictly and item by item.
//!
//! [`decode_body`] owns three rules that `serde_json::from_slice::<Value>` does not give:
//! - **A defect inside one event costs only that event.** A string holding a lone UTF-16
//!   surrogate escape (`"\ud800"`, what `JSON.stringify` emits for a string cut in the middle
//!   of an emoji) or a number beyond `f64` is valid JSON grammar, but not a value The Eye can
//!   store; such an item comes back with a [`Defect`] at the path of the bad value, and the
//!   other items of the batch are read as usual. Only a body that is not JSON at all (a syntax
//!   error, invalid UTF-8) is a whole-request error. The item is rejected rather than stored
//!   with U+FFFD: a replacement character would silently change what the client sent.
//! - **An integer beyond 64 bits** (`18446744073709551617`, `-9223372036854775809`) is a
//!   [`Defect`] `number_out_of_range`, like a number beyond `f64`: `serde_json` would read it
//!   as the nearest float, silently changing what was sent. The range kept exactly is that
//!   of `i64` and `u64` together, -9223372036854775808 to 18446744073709551615.
//! - **Duplicate keys** (`{"qty": 1, "qty": -1}`) are a [`Defect`] `duplicate_key` at the
//!   repeated key's path. JSON leaves their meaning open (RFC 8259 §4), so two readers of the
//!   same bytes could disagree about what was sent.
//! - **A UTF-8 byte-order mark** before the JSON is ignored, as RFC 8259 §8.1 allows.
//!
//! One pass does it in the common case: the body is parsed straight into items, with
//! duplicate detection in the visitor that builds each object. An event object becomes an
//! [`Event`], its envelope's strings borrowed from the body and its `data` read as a [`Data`]
//! tree whose keys and strings borrow the body too (only what is unexpected is built into
//! values): what validation and the personal-data rules read, at a fraction of the
//! allocations of a [`Value`] per event. Only when that pass fails is
//! the body split into its raw items (a scan that checks the grammar but not string contents
//! or number ranges) and each item parsed on its own, so that the failure is pinned to the
//! item, and the field, that caused it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::data::{Data, Members};
use super::ProblemCode;

/// The UTF-8 encoding of U+FEFF.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// `body` without a leading UTF-8 byte-order mark (RFC 8259 §8.1: a parser may ignore it).
pub fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(BYTE_ORDER_MARK).unwrap_or(body)
}

/// Something wrong inside one item that was found while reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Defect {
    /// Path of the offending value in the event, e.g. `data.s` or `data.items[2]`; empty for
    /// the item itself.
    pub field: String,
    pub code: ProblemCode,
    pub message: String,
}

/// One element of the body: an event to validate.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<'a> {
    /// The value as read; `None` when the item could not be read as a value at all (its
    /// [`Defect`] says why).
    pub value: Option<Read<'a>>,
    /// The item's own text, when the value could not be built from it (for the `errors` row).
    pub raw: Option<&'a str>,
    /// Problems found while reading: duplicate keys, unreadable strings or numbers.
    pub defects: Vec<Defect>,
}

impl Item<'_> {
    /// The item as one JSON value, as `serde_json` reads it (`None`: it could not be read).
    pub fn to_value(&self) -> Option<Value> {
        self.value.as_ref().map(Read::to_value)
    }
}

/// An item as read: an event object, its envelope apart, or another JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Read<'a> {
    /// A JSON object.
    Event(Event<'a>),
    /// Any other JSON value (not an event; validation says so).
    Other(Value),
}

impl Read<'_> {
    /// The item as one JSON value, as `serde_json` reads it.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Event(event) => event.to_value(),
            Self::Other(value) => value.clone(),
        }
    }
}

/// The envelope fields whose string values an [`Event`] keeps apart, in the order of
/// [`Event::strings`]: the envelope's fields but `data`.
pub const STRING_FIELDS: [&str; 7] = {
    let fields = super::envelope::FIELDS;
    [
        fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6],
    ]
};

/// An event object as read, without building a [`Value`] for its envelope: the envelope's
/// string fields borrow the body's text (unless they hold an escape), `data` is a [`Data`], and
/// everything else — an envelope field that is not a string, an unknown key — is kept in
/// [`Event::rest`] as `serde_json` would. The object it stands for is [`Event::to_value`].
///
/// Reading the envelope apart is what makes reading a batch cheaper than building a
/// `serde_json::Value` per event (BENCHMARKS.md, "The envelope read apart"): per event, the
/// envelope's keys and strings are neither allocated, nor put into a map, nor freed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event<'a> {
    /// The string values of [`STRING_FIELDS`], by position (`None`: absent, or not a string).
    pub strings: [Option<Cow<'a, str>>; 7],
    /// `data`, of whatever JSON type it is, its keys and strings borrowed from the body.
    pub data: Option<Data<'a>>,
    /// Every other member, by key.
    pub rest: Map<String, Value>,
}

impl Event<'_> {
    /// The string value of the envelope field `index` of [`STRING_FIELDS`].
    pub fn string(&self, index: usize) -> Option<&str> {
        self.strings.get(index)?.as_deref()
    }

    /// Whether the object holds `key` (whatever its value); `field` is the position of `key`
    /// in [`STRING_FIELDS`], which the caller has already looked up (looking it up again
    /// cost ~140 instructions per event: issue 34).
    fn holds(&self, field: Option<usize>, key: &str) -> bool {
        match field {
            Some(index) if self.strings[index].is_some() => true,
            _ if key == "data" => self.data.is_some(),
            _ => self.rest.contains_key(key),
        }
    }

    /// The object this event stands for, member for member.
    pub fn to_value(&self) -> Value {
        let mut object = self.rest.clone();
        for (field, text) in STRING_FIELDS.iter().zip(&self.strings) {
            if let Some(text) = text {
                object.insert((*field).to_owned(), Value::String(text.as_ref().to_owned()));
            }
        }
        if let Some(data) = &self.data {
            object.insert("data".to_owned(), data.to_value());
        }
        Value::Object(object)
    }
}

/// What the body holds.
// One per request, moved once: boxing the single item would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Body<'a> {
    /// A JSON array: a batch.
    Batch(Vec<Item<'a>>),
    /// A JSON object: one event.
    Single(Item<'a>),
    /// Valid JSON, but not an object or an array; names its type (`a number`, `null`, …).
    Other(&'static str),
}

/// Reads `body` (a leading byte-order mark is ignored). Fails only when the body is not JSON.
pub fn decode_body(body: &[u8]) -> Result<Body<'_>, serde_json::Error> {
    let body = strip_bom(body);
    // A body that is UTF-8 as a whole (nearly all) is read as text: the whole is checked in
    // one pass here, and the parser then skips the check it makes string by string on bytes
    // (a call per string, ~1,000 instructions per event of a batch: BENCHMARKS.md, "Request
    // path per event"). Anything else is read as bytes as before, so that its error (and
    // its message, with the position) is the same.
    let top = TopSeed::for_body(body);
    let fast = match std::str::from_utf8(body) {
        Ok(text) => {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            top.deserialize(&mut deserializer)
                .and_then(|top| deserializer.end().map(|()| top))
        }
        Err(_) => {
            let mut deserializer = serde_json::Deserializer::from_slice(body);
            top.deserialize(&mut deserializer)
                .and_then(|top| deserializer.end().map(|()| top))
        }
    };
    match fast {
        Ok(top) => Ok(top),
        Err(error) => item_by_item(body).ok_or(error),
    }
}

/// The slow path: `None` when the body is not JSON at all.
fn item_by_item(body: &[u8]) -> Option<Body<'_>> {
    let raw: &RawValue = serde_json::from_slice(body).ok()?;
    let text = raw.get();
    if text.starts_with('[') {
        let raws: Vec<&RawValue> = serde_json::from_str(text).ok()?;
        Some(Body::Batch(raws.into_iter().map(read_item).collect()))
    } else if text.starts_with('{') {
        Some(Body::Single(read_item(raw)))
    } else {
        // A lone scalar that does not read (say `"\ud800"`) is no event either way.
        Some(Body::Other(match text.as_bytes().first() {
            Some(b'"') => "a string",
            _ => "a number",
        }))
    }
}

fn read_item(raw: &RawValue) -> Item<'_> {
    let notes = RefCell::new(Notes::default());
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    let read = RootSeed { notes: &notes }
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    let notes = notes.into_inner();
    let wide = if notes.suspects.is_empty() {
        Vec::new()
    } else {
        wide_integers(raw.get(), &notes)
    };
    match read {
        // Rejected with its text as sent, as a number beyond f64 is: the value read holds the
        // rounded float.
        Ok(_) if !wide.is_empty() => Item {
            value: None,
            raw: Some(raw.get()),
            defects: wide,
        },
        Ok(value) => Item {
            value: Some(value),
            raw: None,
            defects: notes.defects,
        },
        Err(error) => {
            let message = error.to_string();
            let code = if message.contains("number out of range") {
                ProblemCode::NumberOutOfRange
            } else if message.contains("surrogate") || message.contains("escape") {
                ProblemCode::InvalidUnicode
            } else {
                ProblemCode::InvalidValue
            };
            let field = notes.failed_at.unwrap_or_default();
            let what = if field.is_empty() {
                "the event".to_owned()
            } else {
                format!("`{field}`")
            };
            let message = match code {
                ProblemCode::InvalidUnicode => format!(
                    "{what} holds a string that is not Unicode text (a lone UTF-16 surrogate escape, as left by a string cut in the middle of a character): {message}"
                ),
                ProblemCode::NumberOutOfRange => format!(
                    "{what} holds a number beyond the range of a 64-bit float: {message}"
                ),
                _ => format!("{what} cannot be read: {message}"),
            };
            Item {
                value: None,
                raw: Some(raw.get()),
                defects: vec![Defect {
                    field,
                    code,
                    message,
                }],
            }
        }
    }
}

/// What reading one item noticed.
#[derive(Default)]
struct Notes {
    defects: Vec<Defect>,
    /// Path of the innermost value whose reading failed (set once, by the first to fail).
    failed_at: Option<String>,
    /// How many numbers the item has held so far: the ordinal of the next one.
    numbers: usize,
    /// Numbers read as floats that may have been written as integers beyond 64 bits (the
    /// parser gives no sign of which): their ordinal among the item's numbers, and path.
    suspects: Vec<(usize, String)>,
}

/// Whether a number read as a float may stand for an integer written beyond `i64`/`u64`:
/// integral and at least about 2^63 in size. Loose on purpose (`serde_json` rounds a long
/// integer on its own terms): a suspect only costs a look at the item's text.
fn may_be_wide_integer(value: f64) -> bool {
    value.abs() >= 9.0e18 && value.fract() == 0.0
}

/// The `number_out_of_range` defects of an item whose [`Notes::suspects`] are confirmed in
/// its text `raw`, with the other defects noted while reading it.
fn wide_integers(raw: &str, notes: &Notes) -> Vec<Defect> {
    let wide = wide_integer_ordinals(raw);
    let mut found: Vec<Defect> = notes
        .suspects
        .iter()
        .filter(|(ordinal, _)| wide.contains(ordinal))
        .map(|(_, field)| {
            let what = if field.is_empty() {
                "the event".to_owned()
            } else {
                format!("`{}`", super::truncate_chars(field, 200))
            };
            Defect {
                field: field.clone(),
                code: ProblemCode::NumberOutOfRange,
                message: format!(
                    "{what} holds an integer outside -9223372036854775808..=18446744073709551615 (64 bits); it is refused rather than stored rounded to the nearest float: send it as a string"
                ),
            }
        })
        .collect();
    if !found.is_empty() {
        found.extend(notes.defects.iter().cloned());
    }
    found
}

/// The ordinals, among all numbers of the JSON text `text` in order, of those written as
/// integers (no fraction, no exponent) outside the range of `i64` and `u64` together. `text`
/// is valid JSON (it was parsed before).
fn wide_integer_ordinals(text: &str) -> Vec<usize> {
    const U64_MAX: &[u8] = b"18446744073709551615";
    const I64_MIN_ABS: &[u8] = b"9223372036854775808";
    // Digit strings of valid JSON have no leading zeros: the longer is the larger, and of
    // equal length the byte-wise greater.
    let beyond = |digits: &[u8], bound: &[u8]| {
        digits.len() > bound.len() || (digits.len() == bound.len() && digits > bound)
    };
    let bytes = text.as_bytes();
    let mut wide = Vec::new();
    let mut ordinal = 0;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let negative = bytes[at] == b'-';
                let start = at + usize::from(negative);
                let mut end = start;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                let digits = &bytes[start..end];
                let mut next = end;
                while next < bytes.len()
                    && matches!(bytes[next], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    next += 1;
                }
                let integer = next == end;
                let bound = if negative { I64_MIN_ABS } else { U64_MAX };
                if integer && beyond(digits, bound) {
                    wide.push(ordinal);
                }
                ordinal += 1;
                at = next;
            }
            _ => at += 1,
        }
    }
    wide
}

/// Where a value sits in its event; a chain of borrows, so building it costs nothing and the
/// text is only made when a problem is reported.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => Ok(()),
            Self::Key(Self::Root, key) => f.write_str(key),
            Self::Key(parent, key) => write!(f, "{parent}.{key}"),
            Self::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// The body's top level: an array of items, one object, or anything else.
struct TopSeed {
    /// How many items a batch's vector is made for at first (see [`TopSeed::for_body`]).
    capacity: usize,
}

/// Bytes of the smallest event that can be accepted, give or take a few:
/// `{"session_id":"s","category":"c","name":"n","timestamp":"2021-01-01T00:00:00Z","data":{"a":1}},`
/// is 95.
const SMALLEST_EVENT_BYTES: usize = 95;

/// Items a batch's vector is made for at most before its first item is read; past it, it grows.
const MAX_INITIAL_ITEMS: usize = 1024;

impl TopSeed {
    /// For `body`: a batch's vector is made once for as many items as the body can hold
    /// events that can be accepted. The parser gives no count of an array's elements, and a
    /// vector grown from empty was reallocated, and its items (~270 bytes each) copied, 6
    /// times for a batch of 100: ~340 instructions per event (issue 34). The excess is at most
    /// about 3 times the body's bytes and lives as long as the request's items.
    fn for_body(body: &[u8]) -> Self {
        Self {
            capacity: (body.len() / SMALLEST_EVENT_BYTES).clamp(1, MAX_INITIAL_ITEMS),
        }
    }
}

impl<'de> DeserializeSeed<'de> for TopSeed {
    type Value = Body<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(TopVisitor {
            capacity: self.capacity,
        })
    }
}

struct TopVisitor {
    capacity: usize,
}

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Body<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object or an array of events")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Body::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Body::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Body::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Body::Other("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Body::Other("a string"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Body::Other("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let capacity = seq.size_hint().unwrap_or(self.capacity);
        let mut items = Vec::with_capacity(capacity.min(MAX_INITIAL_ITEMS));
        while let Some(item) = seq.next_element_seed(ItemSeed)? {
            items.push(item);
        }
        Ok(Body::Batch(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        whole_item(|notes| EventVisitor { notes }.visit_map(map).map(Read::Event)).map(Body::Single)
    }
}

/// One element of a batch, with its own notes.
struct ItemSeed;

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = Item<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        whole_item(|notes| RootSeed { notes }.deserialize(deserializer))
    }
}

/// An item: an [`Event`] when it is an object, else its [`Value`].
struct RootSeed<'n> {
    notes: &'n RefCell<Notes>,
}

impl<'de> DeserializeSeed<'de> for RootSeed<'_> {
    type Value = Read<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Read<'de>, D::Error> {
        let notes = self.notes;
        deserializer
            .deserialize_any(RootVisitor { notes })
            .inspect_err(|_| failed_at(notes, &Path::Root))
    }
}

/// [`RootSeed`]'s visitor: an object is read by [`EventVisitor`], anything else as a value.
struct RootVisitor<'n> {
    notes: &'n RefCell<Notes>,
}

impl<'n> RootVisitor<'n> {
    fn value(self) -> DataVisitor<'static, 'n> {
        DataVisitor {
            path: Path::Root,
            notes: self.notes,
        }
    }
}

impl<'de> Visitor<'de> for RootVisitor<'_> {
    type Value = Read<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Read<'de>, E> {
        self.value()
            .visit_bool(value)
            .map(|data| Read::Other(data.into_value()))
    }
    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Read<'de>, E> {
        self.value()
            .visit_i64(value)
            .map(|data| Read::Other(data.into_value()))
    }
    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Read<'de>, E> {
        self.value()
            .visit_u64(value)
            .map(|data| Read::Other(data.into_value()))
    }
    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Read<'de>, E> {
        self.value()
            .visit_f64(value)
            .map(|data| Read::Other(data.into_value()))
    }
    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Read<'de>, E> {
        self.value()
            .visit_str(value)
            .map(|data| Read::Other(data.into_value()))
    }
    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Read<'de>, E> {
        self.value()
            .visit_string(value)
            .map(|data| Read::Other(data.into_value()))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Read<'de>, E> {
        self.value()
            .visit_unit()
            .map(|data| Read::Other(data.into_value()))
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Read<'de>, E> {
        self.value()
            .visit_none()
            .map(|data| Read::Other(data.into_value()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Read<'de>, A::Error> {
        self.value()
            .visit_seq(seq)
            .map(|data| Read::Other(data.into_value()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Read<'de>, A::Error> {
        EventVisitor { notes: self.notes }
            .visit_map(map)
            .map(Read::Event)
    }
}

/// Reads an event object into an [`Event`]: what [`DataVisitor::visit_map`] does at the
/// root (the same values, the same defects in the same order, the first of duplicate keys
/// kept), with the envelope's string fields borrowed instead of put into a map.
struct EventVisitor<'n> {
    notes: &'n RefCell<Notes>,
}

impl<'de> EventVisitor<'_> {
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event<'de>, A::Error> {
        let mut event = Event::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = Path::Key(&Path::Root, &key);
            let field = STRING_FIELDS.iter().position(|field| *field == key);
            let read = match field {
                Some(_) => map.next_value_seed(FieldSeed {
                    path,
                    notes: self.notes,
                })?,
                None => Field::Other(map.next_value_seed(DataSeed {
                    path,
                    notes: self.notes,
                })?),
            };
            // As a map keeps the first of duplicate keys: the value was read (its own
            // defects noted), then the repetition is noted and the value dropped.
            if event.holds(field, &key) {
                duplicate_key(self.notes, &Path::Root, &key);
                continue;
            }
            match (field, read) {
                (Some(index), Field::Text(text)) => event.strings[index] = Some(text),
                (None, Field::Other(value)) if key == "data" => event.data = Some(value),
                (_, Field::Text(text)) => {
                    event
                        .rest
                        .insert(key.into_owned(), Value::String(text.into_owned()));
                }
                (_, Field::Other(value)) => {
                    event.rest.insert(key.into_owned(), value.into_value());
                }
            }
        }
        Ok(event)
    }
}

/// Notes that reading failed at `path`, unless a value inside it failed first (the innermost
/// failure names the field).
fn failed_at(notes: &RefCell<Notes>, path: &Path<'_>) {
    let mut notes = notes.borrow_mut();
    if notes.failed_at.is_none() {
        notes.failed_at = Some(path.to_string());
    }
}

/// Notes the defect of the key `key` repeated in the object at `parent`.
fn duplicate_key(notes: &RefCell<Notes>, parent: &Path<'_>, key: &str) {
    let field = Path::Key(parent, key).to_string();
    let message = format!(
        "`{}` appears more than once in this object; JSON readers disagree about which value counts, so send it once",
        super::truncate_chars(&field, 200)
    );
    notes.borrow_mut().defects.push(Defect {
        field,
        code: ProblemCode::DuplicateKey,
        message,
    });
}

/// An object's key, borrowed from the body unless it holds an escape.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }
    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_owned()))
    }
    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

/// The value of an envelope string field as read: its text when it is a string.
enum Field<'de> {
    Text(Cow<'de, str>),
    Other(Data<'de>),
}

/// [`DataSeed`] for an envelope string field: a string is borrowed, not built into a value.
struct FieldSeed<'p, 'n> {
    path: Path<'p>,
    notes: &'n RefCell<Notes>,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_, '_> {
    type Value = Field<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Field<'de>, D::Error> {
        let path = self.path;
        let notes = self.notes;
        deserializer
            .deserialize_any(FieldVisitor(DataVisitor {
                path: self.path,
                notes: self.notes,
            }))
            .inspect_err(|_| failed_at(notes, &path))
    }
}

struct FieldVisitor<'p, 'n>(DataVisitor<'p, 'n>);

impl<'de> Visitor<'de> for FieldVisitor<'_, '_> {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Borrowed(value)))
    }
    fn visit_str<E>(self, value: &str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(value.to_owned())))
    }
    fn visit_string<E>(self, value: String) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(value)))
    }
    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Field<'de>, E> {
        self.0.visit_bool(value).map(Field::Other)
    }
    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Field<'de>, E> {
        self.0.visit_i64(value).map(Field::Other)
    }
    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Field<'de>, E> {
        self.0.visit_u64(value).map(Field::Other)
    }
    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Field<'de>, E> {
        self.0.visit_f64(value).map(Field::Other)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Field<'de>, E> {
        self.0.visit_unit().map(Field::Other)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Field<'de>, E> {
        self.0.visit_none().map(Field::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
        self.0.visit_seq(seq).map(Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
        self.0.visit_map(map).map(Field::Other)
    }
}

/// An item read in the one pass, with the defects noted while `read` built it.
///
/// A number that may be an integer beyond 64 bits fails the pass, so that the slow path,
/// which has each item's text, can tell.
fn whole_item<'de, E: serde::de::Error>(
    read: impl FnOnce(&RefCell<Notes>) -> Result<Read<'de>, E>,
) -> Result<Item<'de>, E> {
    let notes = RefCell::new(Notes::default());
    let value = read(&notes)?;
    if !notes.borrow().suspects.is_empty() {
        return Err(E::custom(
            "a number may be an integer beyond 64 bits; read item by item",
        ));
    }
    Ok(Item {
        value: Some(value),
        raw: None,
        defects: notes.into_inner().defects,
    })
}

/// Builds a [`Data`] tree as `serde_json` would build a `Value`, noting duplicate keys (the
/// first of them kept) and where reading failed.
struct DataSeed<'p, 'n> {
    path: Path<'p>,
    notes: &'n RefCell<Notes>,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_, '_> {
    type Value = Data<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Data<'de>, D::Error> {
        let path = self.path;
        let notes = self.notes;
        deserializer
            .deserialize_any(DataVisitor {
                path: self.path,
                notes: self.notes,
            })
            .inspect_err(|_| failed_at(notes, &path))
    }
}

/// [`DataSeed`], as a `serde_json::Value`.
#[cfg(test)]
struct ValueSeed<'p, 'n> {
    path: Path<'p>,
    notes: &'n RefCell<Notes>,
}

#[cfg(test)]
impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        DataSeed {
            path: self.path,
            notes: self.notes,
        }
        .deserialize(deserializer)
        .map(Data::into_value)
    }
}

/// Objects up to this many members are searched for a repeated key member by member; a larger
/// one keeps a set of its names, so that no object costs quadratic time.
const SCANNED_MEMBERS: usize = 16;

struct DataVisitor<'p, 'n> {
    path: Path<'p>,
    notes: &'n RefCell<Notes>,
}

impl<'de> Visitor<'de> for DataVisitor<'_, '_> {
    type Value = Data<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Data<'de>, E> {
        Ok(Data::Bool(value))
    }
    fn visit_i64<E>(self, value: i64) -> Result<Data<'de>, E> {
        self.notes.borrow_mut().numbers += 1;
        Ok(Data::Number(value.into()))
    }
    fn visit_u64<E>(self, value: u64) -> Result<Data<'de>, E> {
        self.notes.borrow_mut().numbers += 1;
        Ok(Data::Number(value.into()))
    }
    fn visit_f64<E>(self, value: f64) -> Result<Data<'de>, E> {
        let mut notes = self.notes.borrow_mut();
        if may_be_wide_integer(value) {
            let ordinal = notes.numbers;
            notes.suspects.push((ordinal, self.path.to_string()));
        }
        notes.numbers += 1;
        // The parser yields finite numbers only; as `Value::from`, anything else is null.
        Ok(serde_json::Number::from_f64(value).map_or(Data::Null, Data::Number))
    }
    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Data<'de>, E> {
        Ok(Data::String(Cow::Borrowed(value)))
    }
    fn visit_str<E>(self, value: &str) -> Result<Data<'de>, E> {
        Ok(Data::String(Cow::Owned(value.to_owned())))
    }
    fn visit_string<E>(self, value: String) -> Result<Data<'de>, E> {
        Ok(Data::String(Cow::Owned(value)))
    }
    fn visit_unit<E>(self) -> Result<Data<'de>, E> {
        Ok(Data::Null)
    }
    fn visit_none<E>(self) -> Result<Data<'de>, E> {
        Ok(Data::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Data<'de>, A::Error> {
        let mut array = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        loop {
            let seed = DataSeed {
                path: Path::Index(&self.path, array.len()),
                notes: self.notes,
            };
            match seq.next_element_seed(seed)? {
                Some(value) => array.push(value),
                None => return Ok(Data::Array(array)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Data<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Data<'de>)> = Vec::new();
        // The names of an object past `SCANNED_MEMBERS` members.
        let mut names: Option<std::collections::BTreeSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let seed = DataSeed {
                path: Path::Key(&self.path, &key),
                notes: self.notes,
            };
            // As a map keeps the first of duplicate keys: the value is read (its own defects
            // noted), then the repetition is noted and the value dropped.
            let value = map.next_value_seed(seed)?;
            let repeated = match &mut names {
                Some(names) => !names.insert(key.clone()),
                None => members.iter().any(|(name, _)| *name == key),
            };
            if repeated {
                duplicate_key(self.notes, &self.path, &key);
                continue;
            }
            members.push((key, value));
            if names.is_none() && members.len() > SCANNED_MEMBERS {
                names = Some(members.iter().map(|(name, _)| name.clone()).collect());
            }
        }
        Ok(Data::Object(Members::from_unique(members)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(body: &[u8]) -> Vec<Item<'_>> {
        match decode_body(body).expect("JSON") {
            Body::Batch(items) => items,
            other => panic!("not a batch: {other:?}"),
        }
    }

    fn single(body: &[u8]) -> Item<'_> {
        match decode_body(body).expect("JSON") {
            Body::Single(item) => item,
            other => panic!("not one event: {other:?}"),
        }
    }

    fn codes<'a>(item: &'a Item<'_>) -> Vec<(&'a str, &'a str)> {
        item.defects
            .iter()
            .map(|d| (d.field.as_str(), d.code.as_str()))
            .collect()
    }

    #[test]
    fn a_lone_surrogate_costs_only_its_item() {
        let body = br#"[{"data": {"s": "\ud800"}}, {"data": {"s": "\ud83d\ude00"}}]"#;
        let items = batch(body);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].value, None);
        assert_eq!(codes(&items[0]), [("data.s", "invalid_unicode")]);
        assert_eq!(items[0].raw, Some(r#"{"data": {"s": "\ud800"}}"#));
        assert!(items[1].defects.is_empty());
        assert_eq!(items[1].to_value().unwrap()["data"]["s"], "😀");
    }

    #[test]
    fn lone_surrogates_anywhere_are_pinned_to_their_path() {
        let item = single(br#"{"data": {"list": [1, "\udc00"]}}"#);
        assert_eq!(codes(&item), [("data.list[1]", "invalid_unicode")]);
        // In a key, the object holding it is the place to look.
        let item = single(br#"{"data": {"\ud800x": 1}}"#);
        assert_eq!(codes(&item), [("data", "invalid_unicode")]);
        let item = single(br#"{"name": "\ud83d"}"#);
        assert_eq!(codes(&item), [("name", "invalid_unicode")]);
        // A high surrogate followed by an escape that is not a low one.
        let item = single(br#"{"name": "\ud83d\u0041"}"#);
        assert_eq!(codes(&item), [("name", "invalid_unicode")]);
    }

    #[test]
    fn a_number_beyond_f64_costs_only_its_item() {
        let items = batch(br#"[{"data": {"n": 1e999}}, {"data": {"n": 1}}]"#);
        assert_eq!(codes(&items[0]), [("data.n", "number_out_of_range")]);
        assert!(items[1].value.is_some() && items[1].defects.is_empty());
    }

    #[test]
    fn integers_beyond_64_bits_cost_only_their_item() {
        for wide in [
            "18446744073709551616",
            "18446744073709551617",
            "-9223372036854775809",
            "123456789012345678901234567890",
        ] {
            let text = format!(
                r#"[{{"data": {{"a": [1.5, 1e300, "9", {wide}]}}}}, {{"data": {{"n": 1}}}}]"#
            );
            let items = batch(text.as_bytes());
            assert_eq!(
                codes(&items[0]),
                [("data.a[3]", "number_out_of_range")],
                "{wide}"
            );
            assert_eq!(items[0].value, None, "{wide}");
            assert_eq!(items[0].raw, Some(&text[1..text.find("}}, ").unwrap() + 2]));
            assert!(items[1].value.is_some() && items[1].defects.is_empty());
            // One event alone, too.
            let text = format!(r#"{{"data": {{"n": {wide}}}}}"#);
            assert_eq!(
                codes(&single(text.as_bytes())),
                [("data.n", "number_out_of_range")]
            );
        }
    }

    #[test]
    fn wide_integers_are_found_by_their_place_among_numbers() {
        // Digits inside strings (escaped quotes included) are not numbers; fractions and
        // exponents make a number a float whatever its digits.
        let text = r#"{"s": "a\"b 123456789012345678901 \\", "n": [18446744073709551616, 1.0e1, -9223372036854775808, -9223372036854775809, 18446744073709551615, 99999999999999999999.5, 0, -0]}"#;
        assert_eq!(wide_integer_ordinals(text), [0, 3]);
        assert_eq!(wide_integer_ordinals("[]"), Vec::<usize>::new());
    }

    #[test]
    fn the_edges_of_64_bits_and_large_floats_are_kept() {
        let text = r#"{"data": {"max": 18446744073709551615, "min": -9223372036854775808, "f": 18446744073709551616.0, "e": 1e20, "s": "18446744073709551617", "neg": -1.8446744073709552e19}}"#;
        let item = single(text.as_bytes());
        assert!(item.defects.is_empty(), "{:?}", item.defects);
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(item.to_value().unwrap(), expected);
        // A wide integer after suspects that are not: the ordinal points at the right one.
        let item = single(br#"{"data": {"e": 1e20, "x": [2e19, -99999999999999999999]}}"#);
        assert_eq!(codes(&item), [("data.x[1]", "number_out_of_range")]);
    }

    #[test]
    fn duplicate_keys_are_reported_at_their_path() {
        let item = single(
            br#"{"session_id": "s", "name": "view", "name": "purchase", "data": {"qty": 1, "qty": -1, "a": [{"b": 1, "b": 2}]}}"#,
        );
        assert_eq!(
            codes(&item),
            [
                ("name", "duplicate_key"),
                ("data.qty", "duplicate_key"),
                ("data.a[0].b", "duplicate_key")
            ]
        );
        // The first value is kept for what is reported about the rest of the event.
        assert_eq!(item.to_value().unwrap()["name"], "view");
    }

    /// Past `SCANNED_MEMBERS` an object's names are kept in a set: the same defects, in the
    /// order of the text, the first value kept, members in name order, on both sides of it.
    #[test]
    fn duplicate_keys_of_large_objects_are_found_as_in_small_ones() {
        for members in [3, SCANNED_MEMBERS, SCANNED_MEMBERS + 1, 40] {
            let mut text = String::from(r#"{"data": {"#);
            for n in (0..members).rev() {
                text.push_str(&format!(r#""k{n}": {n}, "#));
            }
            // A repeat of the last name read, of the first, and one with an escape.
            text.push_str(r#""k0": "again", "#);
            text.push_str(&format!(
                r#""k{}": "again", "\u006b1": "again"}}}}"#,
                members - 1
            ));
            let item = single(text.as_bytes());
            let mut expected = vec![
                ("data.k0".to_owned(), "duplicate_key"),
                (format!("data.k{}", members - 1), "duplicate_key"),
            ];
            if members > 1 {
                expected.push(("data.k1".to_owned(), "duplicate_key"));
            }
            let found: Vec<(String, &str)> = item
                .defects
                .iter()
                .map(|defect| (defect.field.clone(), defect.code.as_str()))
                .collect();
            assert_eq!(found, expected, "{members} members");
            let value = item.to_value().unwrap();
            let data = value["data"].as_object().unwrap();
            assert_eq!(data.len(), members);
            assert!(data
                .iter()
                .all(|(name, value)| *name == format!("k{value}")));
            let Some(Read::Event(event)) = &item.value else {
                panic!("an event")
            };
            let Some(Data::Object(read)) = &event.data else {
                panic!("an object")
            };
            let names: Vec<&str> = read.iter().map(|(name, _)| name).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted);
        }
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let item = single(b"\xEF\xBB\xBF{\"name\": \"x\"}");
        assert_eq!(item.to_value().unwrap()["name"], "x");
        assert_eq!(batch(b"\xEF\xBB\xBF [1]").len(), 1);
        // Only one, and only at the start.
        assert!(decode_body(b"\xEF\xBB\xBF\xEF\xBB\xBF{}").is_err());
        assert!(decode_body(b" \xEF\xBB\xBF{}").is_err());
    }

    #[test]
    fn a_body_that_is_not_json_is_an_error() {
        for body in [
            &b"{"[..],
            b"",
            b"[1,]",
            b"{\"a\": \"\\x\"}",
            b"[{\"a\": 1}] x",
            b"{\"a\": \"\xff\"}",
        ] {
            assert!(decode_body(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn other_top_levels_are_named() {
        for (body, name) in [
            (&b"null"[..], "null"),
            (b"true", "a boolean"),
            (b"1.5", "a number"),
            (b"\"x\"", "a string"),
            (b"\"\\ud800\"", "a string"),
            (b"1e999", "a number"),
        ] {
            match decode_body(body) {
                Ok(Body::Other(found)) => assert_eq!(found, name, "{body:?}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    /// [`decode_body`] as it read every body before it read UTF-8 bodies as text: as bytes.
    fn decode_as_bytes(body: &[u8]) -> Result<Body<'_>, serde_json::Error> {
        let body = strip_bom(body);
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let fast = TopSeed::for_body(body)
            .deserialize(&mut deserializer)
            .and_then(|top| deserializer.end().map(|()| top));
        match fast {
            Ok(top) => Ok(top),
            Err(error) => item_by_item(body).ok_or(error),
        }
    }

    /// Reading a UTF-8 body as text gives what reading it as bytes gave — the items, their
    /// values, defects and raw texts, or the error with its message and position — on the
    /// fuzz seed corpus, every prefix of each seed (errors at every position), and bodies
    /// made to hit each reading rule.
    #[test]
    fn text_and_bytes_read_alike() {
        let mut bodies = seeds_and_their_prefixes();
        for body in [
            &br#"[{"data": {"s": "\ud800"}}, {"data": {"n": 1e999}}, {"a": 1, "a": 2}]"#[..],
            br#"{"data": {"n": 18446744073709551616, "m": -9223372036854775809}}"#,
            br#"[{"s": "\ud83d\ude00 \u00e9 \n"}, 1, "x", null, [], {}]"#,
            b"\xEF\xBB\xBF[{\"name\": \"caf\xC3\xA9\"}]",
            b"[{\"name\": \"\xff\"}]",
            b"{\"a\": \"\xC3\"}",
            b"  [ {\"a\" : [1, 2.5, -0, 1e3] } ]  ",
            b"[1,]",
            b"{\"a\": 1} x",
        ] {
            bodies.push(body.to_vec());
        }
        for body in &bodies {
            assert_eq!(
                format!("{:?}", decode_body(body)),
                format!("{:?}", decode_as_bytes(body)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn values_read_as_serde_json_reads_them() {
        let text =
            r#"{"a": [1, -2, 3.5, true, null, "x\"y", {"b": {}}], "c": 18446744073709551615}"#;
        let item = single(text.as_bytes());
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(item.to_value().unwrap(), expected);
    }

    /// An item read as one value at the root: how every item was read before the envelope
    /// was read apart ([`Event`]), the oracle of the test below.
    fn read_whole(text: &str) -> (Value, Vec<Defect>) {
        let notes = RefCell::new(Notes::default());
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = ValueSeed {
            path: Path::Root,
            notes: &notes,
        }
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .expect("an item that was read");
        (value, notes.into_inner().defects)
    }

    /// The fuzz seed corpus's JSON bodies and every prefix of each (errors at every position).
    fn seeds_and_their_prefixes() -> Vec<Vec<u8>> {
        let mut bodies: Vec<Vec<u8>> = crate::validate::differential::seed_bodies()
            .into_iter()
            .map(|(_, body)| body)
            .collect();
        for body in bodies.clone() {
            for end in 0..body.len() {
                bodies.push(body[..end].to_vec());
            }
        }
        bodies
    }

    /// The corpus of the test below: the fuzz seeds, every prefix of each, the envelope
    /// differential test's events, and bodies made for the envelope read apart — its fields
    /// repeated, of other types, escaped, around unknown keys and `data`, in every order.
    fn corpus() -> Vec<Vec<u8>> {
        let mut bodies = seeds_and_their_prefixes();
        // The envelope differential test's events, each field of every kind it tries.
        for (_, event) in crate::validate::differential::generated() {
            bodies.push(serde_json::to_vec(&event).unwrap());
        }
        for body in [
            &br#"[{"name": "a", "name": "b"}, {"name": 1, "name": "b"}, {"name": "a", "name": 2}]"#[..],
            br#"{"data": {"a": 1}, "data": {"b": 2}, "category": "c", "zz": 1, "aa": [1, {"x": "\u00e9"}]}"#,
            br#"{"session_id": "s\u00e9\n", "category": "p\"q", "name": null, "timestamp": 5, "sent_at": {}, "event_id": [], "user_id": true}"#,
            br#"{"a": 1, "data": "text", "b": {"b": 1, "b": 2}, "event_id": "x", "event_id": null}"#,
            br#"[{"data": null}, {"data": []}, {}, {"extra": "\ud83d\ude00", "data": {"d": 1e300}}]"#,
            br#"[{"name": "\ud800"}, {"name": "n"}]"#,
            br#"[{"user_id": 18446744073709551616}, {"data": {"n": -9223372036854775809}}]"#,
            br#"[1, "x", null, [], [{"name": "n"}], {"name": "n", "data": {"name": "m", "name": "o"}}]"#,
            b"\xEF\xBB\xBF{\"category\": \"caf\xC3\xA9\", \"data\": {}}",
        ] {
            bodies.push(body.to_vec());
        }
        bodies
    }

    /// Every item read apart stands for the value it was read from as a whole — the same
    /// members, the same defects in the same order — and validates to the same outcome as
    /// that value, on the corpus above.
    #[test]
    fn events_read_apart_are_the_values_read_whole() {
        use crate::validate::schemas::SchemaSet;
        use crate::validate::{validate_item, Rules};
        let rules = Rules::from(&crate::config::IngestConfig::default());
        let schemas =
            SchemaSet::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"))
                .unwrap();
        let received_at = chrono::Utc::now();
        let mut events = 0;
        for body in corpus() {
            let items = match decode_body(&body) {
                Ok(Body::Batch(items)) => items,
                Ok(Body::Single(item)) => vec![item],
                _ => continue,
            };
            let text = std::str::from_utf8(strip_bom(&body)).unwrap();
            let texts: Vec<&str> = if text.trim_start().starts_with('[') {
                serde_json::from_str::<Vec<&RawValue>>(text)
                    .unwrap()
                    .into_iter()
                    .map(RawValue::get)
                    .collect()
            } else {
                vec![text]
            };
            assert_eq!(items.len(), texts.len(), "{text}");
            for (item, text) in items.iter().zip(texts) {
                let Some(read) = &item.value else { continue };
                if matches!(read, Read::Event(_)) {
                    events += 1;
                }
                let (value, defects) = read_whole(text);
                assert_eq!(read.to_value(), value, "{text}");
                assert_eq!(item.defects, defects, "{text}");
                let whole = Item {
                    value: Some(Read::Other(value)),
                    ..item.clone()
                };
                for index in [None, Some(3)] {
                    assert_eq!(
                        format!(
                            "{:?}",
                            validate_item(item, index, received_at, &rules, &schemas)
                        ),
                        format!(
                            "{:?}",
                            validate_item(&whole, index, received_at, &rules, &schemas)
                        ),
                        "{text}"
                    );
                }
            }
        }
        assert!(events > 300, "the corpus reads {events} events");
    }
}
