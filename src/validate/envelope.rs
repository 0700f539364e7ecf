//! The envelope's rules, declared with `validator`'s derive (issue 35), and their mapping to
//! The Eye's stable problem codes, field paths and messages.
//!
//! Validation reads an event as arbitrary JSON, so that it can say everything that is wrong
//! with it at once: [`super::validate_event`] first reads each envelope field's presence and
//! JSON type by hand (a typed struct could not hold a number where a string belongs, and
//! serde would stop at the first such field), then puts what it read into [`EnvelopeFields`],
//! whose `#[validate(...)]` attributes are the rules: lengths in characters, not blank, the
//! UUID form of `event_id`, the timestamp forms and range, and the shape of `data`.
//! [`EnvelopeFields::problems`] turns `validator`'s errors into [`Problem`]s in the fixed
//! order of the fields, with the codes and messages the API has always answered (the
//! differential test in `differential.rs` holds them to the recorded outcomes).
//!
//! Kept hand-written, each with the reason next to it in [`super::validate_value`]:
//! - `data`'s size in bytes: measuring it means serialising `data`, which the event needs
//!   anyway; a `validator` rule would serialise it a second time on every event.
//! - The time window (`timestamp_in_future`, `timestamp_too_old`): it applies to the time
//!   after clock-skew correction, which depends on `sent_at` and the receive time, not to a
//!   field as sent, and it is reported after the payload's problems.
//! - Unknown fields: they are keys of the JSON object, which no struct field can declare.
//!
//! `validator`'s `range` has no rule to express here: no envelope field is a number.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;
use validator::{Validate, ValidateArgs, ValidateLength, ValidationError, ValidationErrorsKind};

use super::data::Members;
use super::{timestamp, truncate_chars, ProblemCode, Rules};

/// The envelope fields as read from the JSON object: `None` when absent, `null` or of the
/// wrong JSON type (a problem the reading already reported), so that a rule never reports a
/// second problem for one field.
#[derive(Debug, Validate)]
#[validate(context = Rules)]
pub(super) struct EnvelopeFields<'a> {
    /// A UUID other than the nil UUID, in any form `uuid` parses.
    #[validate(custom(function = "event_id_form", code = "invalid_event_id"))]
    pub event_id: Option<Parsed<'a, Uuid>>,
    /// The application's session id, 1–128 characters, not blank.
    #[validate(
        length(min = 1, max = 128),
        custom(function = "not_blank", code = "too_short")
    )]
    pub session_id: Option<Text<'a>>,
    /// The application's account id of the person, 1–128 characters, not blank, when sent.
    #[validate(
        length(min = 1, max = 128),
        custom(function = "not_blank", code = "too_short")
    )]
    pub user_id: Option<Text<'a>>,
    /// 1–100 characters, not blank.
    #[validate(
        length(min = 1, max = 100),
        custom(function = "not_blank", code = "too_short")
    )]
    pub category: Option<Text<'a>>,
    /// 1–100 characters, not blank.
    #[validate(
        length(min = 1, max = 100),
        custom(function = "not_blank", code = "too_short")
    )]
    pub name: Option<Text<'a>>,
    /// One of the two timestamp forms, years 1900–2299 ([`timestamp::parse`]).
    #[validate(custom(function = "timestamp_form", code = "invalid_timestamp"))]
    pub timestamp: Option<Parsed<'a, DateTime<Utc>>>,
    /// As `timestamp`.
    #[validate(custom(function = "timestamp_form", code = "invalid_timestamp"))]
    pub sent_at: Option<Parsed<'a, DateTime<Utc>>>,
    /// A JSON object with at least one member, nested at most `ingest.max_data_depth` levels.
    #[validate(
        custom(function = "non_empty", code = "empty_data"),
        custom(function = "within_depth", use_context, code = "data_too_deep")
    )]
    pub data: Option<&'a Members<'a>>,
}

/// A string field's text, as its rules read it. `length` counts characters, and counting them
/// took ~80 instructions per field of every event (issue 34): [`ValidateLength`] here first
/// asks whether the text's length in bytes settles the bounds, as it does for nearly every
/// value, and counts the characters only when it does not.
#[derive(Debug, Clone, Copy)]
pub(super) struct Text<'a>(pub &'a str);

/// As the text: `validator` keeps the value of a field that broke a rule as its error's
/// `value` parameter.
impl serde::Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl ValidateLength<u64> for Text<'_> {
    /// What `validator`'s own rule answers for the text's characters (a test compares them):
    /// a character is 1 to 4 bytes, so a text of `b` bytes has between `ceil(b / 4)` and `b`
    /// characters, and when both are within the bounds, so is the count.
    fn validate_length(&self, min: Option<u64>, max: Option<u64>, equal: Option<u64>) -> bool {
        let bytes = self.0.len() as u64;
        let settled = equal.is_none()
            && min.is_none_or(|min| bytes.div_ceil(4) >= min)
            && max.is_none_or(|max| bytes <= max);
        if settled {
            return true;
        }
        let chars = self.0.chars().count() as u64;
        match equal {
            Some(equal) => chars == equal,
            None => min.is_none_or(|min| chars >= min) && max.is_none_or(|max| chars <= max),
        }
    }

    fn length(&self) -> Option<u64> {
        Some(self.0.chars().count() as u64)
    }
}

/// A field's text with what it reads as, read once: its rule asks whether it read, and
/// validation keeps the value. (Reading each twice, once in the rule and once to keep it,
/// cost ~500 instructions per event: BENCHMARKS.md, "Issue 34, ninth session".)
#[derive(Debug, Clone, Copy)]
pub(super) struct Parsed<'a, T> {
    pub text: &'a str,
    /// `None`: the text does not read as a `T` this field accepts.
    pub value: Option<T>,
}

/// As the text alone: `validator` keeps the value of a field that broke a rule as its error's
/// `value` parameter, which was the text before it was read once.
impl<T> serde::Serialize for Parsed<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.text)
    }
}

impl<'a> Parsed<'a, Uuid> {
    /// `event_id`: a UUID other than the nil one, whose all-zero value would make every
    /// client's "no id" the same id.
    pub fn event_id(text: &'a str) -> Self {
        let value = Uuid::try_parse(text).ok().filter(|id| !id.is_nil());
        Self { text, value }
    }
}

impl<'a> Parsed<'a, DateTime<Utc>> {
    /// A time in one of the two forms, within ClickHouse's `DateTime64` range
    /// ([`timestamp::parse`]).
    pub fn time(text: &'a str) -> Self {
        let value = timestamp::parse(text);
        Self { text, value }
    }
}

/// The fields in the order their problems are reported.
pub(super) const FIELDS: [&str; 8] = [
    "event_id",
    "session_id",
    "user_id",
    "category",
    "name",
    "timestamp",
    "sent_at",
    "data",
];

impl<'a> EnvelopeFields<'a> {
    /// The text of the string field `field` of [`FIELDS`] (`None` for `data`).
    fn text(&self, field: &str) -> Option<&'a str> {
        match field {
            "event_id" => self.event_id.map(|id| id.text),
            "session_id" => self.session_id.map(|text| text.0),
            "user_id" => self.user_id.map(|text| text.0),
            "category" => self.category.map(|text| text.0),
            "name" => self.name.map(|text| text.0),
            "timestamp" => self.timestamp.map(|time| time.text),
            "sent_at" => self.sent_at.map(|time| time.text),
            _ => None,
        }
    }

    /// Runs the rules; for each field of [`FIELDS`] that broke one, the problem to report
    /// (one per field: the first in the rule order below), as `(index in FIELDS, code,
    /// message)`. Empty when every rule holds — the common case, which allocates nothing.
    pub fn problems(&self, rules: &Rules) -> Vec<(usize, ProblemCode, String)> {
        let Err(errors) = self.validate_with_args(rules) else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for (index, field) in FIELDS.iter().enumerate() {
            let Some(ValidationErrorsKind::Field(broken)) = errors.errors().get(*field) else {
                continue;
            };
            if let Some((code, message)) = self.problem(field, broken, rules) {
                problems.push((index, code, message));
            }
        }
        problems
    }

    /// The one problem reported for `field`: the rules' errors are collected in `validator`'s
    /// own order (`length` before `custom`), but the answers always named a blank value
    /// `too_short` before any length, and an empty `data` before its depth.
    fn problem(
        &self,
        field: &str,
        broken: &[ValidationError],
        rules: &Rules,
    ) -> Option<(ProblemCode, String)> {
        let has = |code: &str| broken.iter().any(|error| error.code == code);
        if field == "data" {
            if has("empty_data") {
                return Some((
                    ProblemCode::EmptyData,
                    "data must not be an empty object".to_owned(),
                ));
            }
            let depth = self.data.map_or(0, super::depth_of_object);
            return has("data_too_deep").then(|| {
                (
                    ProblemCode::DataTooDeep,
                    format!(
                        "data is nested {depth} levels deep; at most {} are allowed",
                        rules.max_data_depth
                    ),
                )
            });
        }
        let text = self.text(field).unwrap_or_default();
        if has("invalid_event_id") {
            return Some((
                ProblemCode::InvalidEventId,
                "event_id must be a non-nil UUID such as 0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d"
                    .to_owned(),
            ));
        }
        if has("invalid_timestamp") {
            return Some((
                ProblemCode::InvalidTimestamp,
                timestamp_message(field, text),
            ));
        }
        // `length`'s error covers both ends; blank (which includes empty) is told first.
        if has("too_short") || text.is_empty() {
            return Some((
                ProblemCode::TooShort,
                format!("{field} must not be empty or blank"),
            ));
        }
        if let Some(error) = broken.iter().find(|error| error.code == "length") {
            let max = error.params.get("max").and_then(Value::as_u64).unwrap_or(0);
            let chars = text.chars().count();
            return Some((
                ProblemCode::TooLong,
                format!("{field} has {chars} characters; at most {max} are allowed"),
            ));
        }
        None
    }
}

/// The message of `invalid_timestamp`, quoting at most 64 characters of what was sent.
pub(super) fn timestamp_message(field: &str, text: &str) -> String {
    format!(
        "{field} `{}` is neither RFC 3339 with an offset (2021-01-01T09:15:27.243860Z) nor YYYY-MM-DD HH:MM:SS[.ffffff] in UTC, between the years 1900 and 2299",
        truncate_chars(text, 64)
    )
}

fn rule_broken(code: &'static str) -> ValidationError {
    ValidationError {
        code: Cow::Borrowed(code),
        message: None,
        params: Default::default(),
    }
}

/// `event_id`: read by [`Parsed::event_id`].
fn event_id_form(id: &Parsed<'_, Uuid>) -> Result<(), ValidationError> {
    match id.value {
        Some(_) => Ok(()),
        None => Err(rule_broken("invalid_event_id")),
    }
}

/// Not empty and not only whitespace: a blank id or name groups nothing.
fn not_blank(text: &Text<'_>) -> Result<(), ValidationError> {
    // A text that starts with an ASCII character that is not whitespace is not blank, which
    // settles nearly every value without the trim's scan from both ends.
    let settled = text
        .0
        .as_bytes()
        .first()
        .is_some_and(|&byte| byte.is_ascii() && !char::from(byte).is_whitespace());
    if !settled && text.0.trim().is_empty() {
        Err(rule_broken("too_short"))
    } else {
        Ok(())
    }
}

/// One of the two timestamp forms, within ClickHouse's `DateTime64` range: read by
/// [`Parsed::time`].
fn timestamp_form(time: &Parsed<'_, DateTime<Utc>>) -> Result<(), ValidationError> {
    match time.value {
        Some(_) => Ok(()),
        None => Err(rule_broken("invalid_timestamp")),
    }
}

/// `data` has at least one member: an empty object says nothing about the event.
fn non_empty(data: &&Members<'_>) -> Result<(), ValidationError> {
    if data.is_empty() {
        Err(rule_broken("empty_data"))
    } else {
        Ok(())
    }
}

/// `data` is nested at most `ingest.max_data_depth` levels (the object itself is level 1).
fn within_depth(data: &&Members<'_>, rules: &Rules) -> Result<(), ValidationError> {
    if super::depth_of_object(data) > rules.max_data_depth {
        Err(rule_broken("data_too_deep"))
    } else {
        Ok(())
    }
}

/// What [`super::validate_event`] reports for one field of [`FIELDS`]: its reading problem,
/// else its rule problem, else nothing.
pub(super) type Slot = Option<(ProblemCode, String)>;

/// Puts the problems of [`EnvelopeFields::problems`] into `slots` where reading found none.
pub(super) fn merge(slots: &mut [Slot; 8], rule_problems: Vec<(usize, ProblemCode, String)>) {
    for (index, code, message) in rule_problems {
        slots[index].get_or_insert((code, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXTS: [&str; 14] = [
        "",
        " ",
        "\u{b}",
        "\t\n ",
        "\u{a0}",
        "\u{3000}x",
        "a",
        " a",
        "\u{85}",
        "é",
        "ab",
        "日本語",
        "😀😀",
        "e2085be5-9137-4e4e-80b5-f1ffddc25423",
    ];

    /// The byte-length shortcut answers as `validator`'s own rule (characters counted) for
    /// every bound around each text's length in bytes and in characters.
    #[test]
    fn the_length_rule_answers_as_counting_characters_does() {
        let mut texts: Vec<String> = TEXTS.iter().map(|t| (*t).to_owned()).collect();
        texts.push("é".repeat(100));
        texts.push("😀".repeat(33));
        texts.push("a".repeat(129));
        for text in &texts {
            let counted = |min: Option<u64>, max: Option<u64>, equal: Option<u64>| {
                text.as_str().validate_length(min, max, equal)
            };
            let bounds: Vec<Option<u64>> = std::iter::once(None)
                .chain((0..=140).map(Some))
                .chain([Some(u64::MAX)])
                .collect();
            for &min in &bounds {
                for &max in &bounds {
                    for equal in [
                        None,
                        Some(text.chars().count() as u64),
                        Some(text.len() as u64),
                    ] {
                        assert_eq!(
                            Text(text).validate_length(min, max, equal),
                            counted(min, max, equal),
                            "{text:?} {min:?} {max:?} {equal:?}"
                        );
                    }
                }
            }
            assert_eq!(Text(text).length(), text.as_str().length());
        }
    }

    #[test]
    fn not_blank_answers_as_trimming_does() {
        for text in TEXTS {
            for text in [text.to_owned(), format!("{text} "), format!(" {text}")] {
                assert_eq!(
                    not_blank(&Text(&text)).is_ok(),
                    !text.trim().is_empty(),
                    "{text:?}"
                );
            }
        }
        for byte in 0..=0x7f_u8 {
            let text = char::from(byte).to_string();
            assert_eq!(
                not_blank(&Text(&text)).is_ok(),
                !text.trim().is_empty(),
                "{byte}"
            );
        }
    }
}
