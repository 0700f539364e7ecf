//! Query strings of the read API, parsed by hand so that every problem is reported at once.
//!
//! axum's `Query` extractor stops at the first bad value and answers in its own format; here
//! each parameter is checked, unknown and repeated ones are named, and the answer is one 400
//! in the API's error shape with one problem per parameter. The parameter structs double as
//! the OpenAPI description of the parameters (`IntoParams`), and their `NAMES` are the only
//! names accepted, so the document and the parser cannot drift apart silently (a test checks
//! both agree).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use the_eye_types::Problem;
use utoipa::{IntoParams, ToSchema};

use super::codes;
use super::ApiError;
use crate::store::Order;

/// Default number of items per page.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page: bounds the work and the memory of one request.
pub const MAX_LIMIT: u32 = 1000;

/// Unknown parameters named one by one in a 400; the rest are counted in one more problem, so
/// that a query string of thousands of made-up parameters gets an answer of a few KiB.
pub const MAX_NAMED_UNKNOWN: usize = 20;

/// Listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

impl From<SortOrder> for Order {
    fn from(order: SortOrder) -> Self {
        match order {
            SortOrder::Asc => Order::Asc,
            SortOrder::Desc => Order::Desc,
        }
    }
}

/// The raw parameters of one request and the problems found so far.
pub struct Params {
    pairs: Vec<(String, String)>,
    taken: Vec<&'static str>,
    problems: Vec<Problem>,
}

impl Params {
    /// Splits a raw query string (`None` when the URL has none).
    pub fn parse(raw: Option<&str>) -> Self {
        let mut problems = Vec::new();
        let pairs = match serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or("")) {
            Ok(pairs) => pairs,
            Err(error) => {
                problems.push(problem(
                    "",
                    codes::INVALID_PARAMETER,
                    format!("the query string cannot be read: {error}"),
                ));
                Vec::new()
            }
        };
        Self {
            pairs,
            taken: Vec::new(),
            problems,
        }
    }

    /// Records a problem with parameter `field`.
    pub fn problem(&mut self, field: &str, code: &str, message: impl Into<String>) {
        self.problems.push(problem(field, code, message.into()));
    }

    /// Whether a problem was already recorded for `field`.
    pub fn has_problem(&self, field: &str) -> bool {
        self.problems.iter().any(|p| p.field == field)
    }

    /// The value of `name`, if given once; records a problem if repeated.
    fn raw(&mut self, name: &'static str) -> Option<String> {
        self.taken.push(name);
        let mut values = self.pairs.iter().filter(|(key, _)| key == name);
        let first = values.next()?.1.clone();
        if values.next().is_some() {
            self.problem(
                name,
                codes::DUPLICATE_PARAMETER,
                format!("`{name}` is given more than once; give it once"),
            );
            return None;
        }
        Some(first)
    }

    /// A non-empty text value.
    pub fn text(&mut self, name: &'static str) -> Option<String> {
        let value = self.raw(name)?;
        if value.is_empty() {
            self.problem(
                name,
                codes::INVALID_PARAMETER,
                format!("`{name}` is empty; leave it out to not filter on it"),
            );
            return None;
        }
        Some(value)
    }

    /// A non-empty text value of at most `max` characters (as the document says).
    pub fn bounded_text(&mut self, name: &'static str, max: usize) -> Option<String> {
        let value = self.text(name)?;
        let chars = value.chars().count();
        if chars > max {
            self.problem(
                name,
                codes::INVALID_PARAMETER,
                format!("`{name}` has {chars} characters; at most {max} are allowed"),
            );
            return None;
        }
        Some(value)
    }

    /// `true` or `false`.
    pub fn boolean(&mut self, name: &'static str) -> Option<bool> {
        let value = self.raw(name)?;
        match value.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.problem(
                    name,
                    codes::INVALID_PARAMETER,
                    format!("`{name}` must be `true` or `false`"),
                );
                None
            }
        }
    }

    /// An RFC 3339 timestamp within ClickHouse's `DateTime64` range (1900-01-01 to
    /// 2299-12-31, [`crate::validate::timestamp::in_range`]); outside it the problem is
    /// `time_out_of_range`, since ClickHouse could not compare it.
    pub fn time(&mut self, name: &'static str) -> Option<DateTime<Utc>> {
        let value = self.raw(name)?;
        match DateTime::parse_from_rfc3339(&value) {
            Ok(time) if !crate::validate::timestamp::in_range(&time.to_utc()) => {
                self.problem(
                    name,
                    codes::TIME_OUT_OF_RANGE,
                    format!("`{name}` must be from 1900-01-01T00:00:00Z to 2299-12-31T23:59:59Z, the times ClickHouse stores"),
                );
                None
            }
            Ok(time) => Some(time.to_utc()),
            Err(error) => {
                let hint = if value.contains(' ') {
                    " (a `+` in a URL means a space: write the offset's `+` as `%2B`, or use `Z`)"
                } else {
                    ""
                };
                self.problem(
                    name,
                    codes::INVALID_PARAMETER,
                    format!("`{name}` must be an RFC 3339 time such as 2025-01-31T09:15:27Z: {error}{hint}"),
                );
                None
            }
        }
    }

    /// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
    pub fn limit(&mut self) -> u32 {
        let Some(value) = self.raw("limit") else {
            return DEFAULT_LIMIT;
        };
        match value.parse::<u32>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            _ => {
                self.problem(
                    "limit",
                    codes::INVALID_PARAMETER,
                    format!("`limit` must be a whole number from 1 to {MAX_LIMIT}, not `{value}`"),
                );
                DEFAULT_LIMIT
            }
        }
    }

    /// A whole number from `min` to `max`; `default` when absent or invalid (then a problem
    /// is recorded).
    pub fn whole(&mut self, name: &'static str, min: u64, max: u64, default: u64) -> u64 {
        self.optional_whole(name, min, max).unwrap_or(default)
    }

    /// A whole number from `min` to `max`, if given; a problem is recorded if invalid.
    pub fn optional_whole(&mut self, name: &'static str, min: u64, max: u64) -> Option<u64> {
        let value = self.raw(name)?;
        match value.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(
                    name,
                    codes::INVALID_PARAMETER,
                    format!("`{name}` must be a whole number from {min} to {max}, not `{value}`"),
                );
                None
            }
        }
    }

    /// A share: a number greater than 0 and at most 1; `default` when absent or invalid.
    pub fn share(&mut self, name: &'static str, default: f64) -> f64 {
        let Some(value) = self.raw(name) else {
            return default;
        };
        match value.parse::<f64>() {
            Ok(share) if share > 0.0 && share <= 1.0 => share,
            _ => {
                self.problem(
                    name,
                    codes::INVALID_PARAMETER,
                    format!(
                        "`{name}` must be a number greater than 0 and at most 1, not `{value}`"
                    ),
                );
                default
            }
        }
    }

    /// `order`: `asc` or `desc`, `default` when absent.
    pub fn order(&mut self, default: SortOrder) -> SortOrder {
        match self.raw("order").as_deref() {
            None => default,
            Some("asc") => SortOrder::Asc,
            Some("desc") => SortOrder::Desc,
            Some(other) => {
                self.problem(
                    "order",
                    codes::INVALID_PARAMETER,
                    format!("`order` must be `asc` or `desc`, not `{other}`"),
                );
                default
            }
        }
    }

    /// `cursor`, as given (decoded later, once the filters are known).
    pub fn cursor(&mut self) -> Option<String> {
        self.raw("cursor")
    }

    /// Reports parameters nobody asked for, the first [`MAX_NAMED_UNKNOWN`] by name and the
    /// rest by number; `Err` with every problem if there is any.
    pub fn finish(mut self) -> Result<(), ApiError> {
        let mut seen = std::collections::HashSet::new();
        let unknown: Vec<String> = self
            .pairs
            .iter()
            .map(|(key, _)| key)
            .filter(|key| !self.taken.contains(&key.as_str()) && seen.insert(key.as_str()))
            .cloned()
            .collect();
        let known = self.taken.join(", ");
        for key in unknown.iter().take(MAX_NAMED_UNKNOWN) {
            self.problem(
                key,
                codes::UNKNOWN_PARAMETER,
                format!("`{key}` is not a parameter of this route; it takes {known}"),
            );
        }
        if unknown.len() > MAX_NAMED_UNKNOWN {
            self.problem(
                "",
                codes::UNKNOWN_PARAMETER,
                format!(
                    "{} more parameters are not parameters of this route; it takes {known}",
                    unknown.len() - MAX_NAMED_UNKNOWN
                ),
            );
        }
        if self.problems.is_empty() {
            return Ok(());
        }
        Err(invalid(self.problems))
    }
}

fn problem(field: &str, code: &str, message: String) -> Problem {
    Problem {
        index: None,
        field: field.to_owned(),
        code: code.to_owned(),
        message,
    }
}

/// The 400 answer for parameter problems.
pub fn invalid(problems: Vec<Problem>) -> ApiError {
    let message = match problems.as_slice() {
        [only] => only.message.clone(),
        _ => format!(
            "{} problems with the parameters; see problems",
            problems.len()
        ),
    };
    ApiError::BadRequest {
        code: codes::INVALID_PARAMETERS,
        message,
        problems,
    }
}

/// The 400 answer for one bad path parameter.
pub fn invalid_path(field: &str, message: String) -> ApiError {
    invalid(vec![problem(field, codes::INVALID_PARAMETER, message)])
}

/// Filters of `GET /api/events`. An empty value (`?category=`) is refused rather than read
/// as "no filter": no stored event has an empty category, so it can only be a mistake; the
/// document says so with `minLength: 1`.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilterParams {
    /// Only events of this session (exact match).
    #[param(min_length = 1)]
    pub session_id: Option<String>,
    /// Only events of this user (`user_id`, exact match).
    #[param(min_length = 1, max_length = 128)]
    pub user_id: Option<String>,
    /// Only events of this category (exact match).
    #[param(min_length = 1)]
    pub category: Option<String>,
    /// Only events with this name (exact match).
    #[param(min_length = 1)]
    pub name: Option<String>,
    /// Only events of this application (exact match).
    #[param(min_length = 1)]
    pub application: Option<String>,
    /// Events whose `timestamp` is at or after this RFC 3339 time (inclusive). Write a `+`
    /// offset as `%2B`, or use `Z`. Every time is from 1900-01-01 to 2299-12-31, what
    /// ClickHouse stores (`time_out_of_range` otherwise).
    pub from: Option<DateTime<Utc>>,
    /// Events whose `timestamp` is before this RFC 3339 time (exclusive). With `from`, it
    /// must be later than `from` (`400 invalid_parameters` otherwise: a rule across two
    /// parameters, which OpenAPI cannot state).
    pub to: Option<DateTime<Utc>>,
    /// Events received at or after this RFC 3339 time (inclusive).
    pub received_from: Option<DateTime<Utc>>,
    /// Events received before this RFC 3339 time (exclusive); later than `received_from`
    /// when both are given (`400 invalid_parameters` otherwise).
    pub received_to: Option<DateTime<Utc>>,
    /// Events whose `client_timestamp` (the time exactly as the client sent it, before any
    /// clock-skew correction) is at or after this RFC 3339 time (inclusive). With
    /// `session_id`, the bound to use for a stretch of one session: the table is sorted by
    /// session and then by this time, so only that stretch is read (`from`/`to` filter the
    /// corrected `timestamp`, which is not in the sort key).
    pub client_from: Option<DateTime<Utc>>,
    /// Events whose `client_timestamp` is before this RFC 3339 time (exclusive); later than
    /// `client_from` when both are given (`400 invalid_parameters` otherwise).
    pub client_to: Option<DateTime<Utc>>,
}

impl EventFilterParams {
    pub const NAMES: &'static [&'static str] = &[
        "session_id",
        "user_id",
        "category",
        "name",
        "application",
        "from",
        "to",
        "received_from",
        "received_to",
        "client_from",
        "client_to",
    ];

    pub fn take(params: &mut Params) -> Self {
        let filter = Self {
            session_id: params.text("session_id"),
            user_id: params.bounded_text("user_id", 128),
            category: params.text("category"),
            name: params.text("name"),
            application: params.text("application"),
            from: params.time("from"),
            to: params.time("to"),
            received_from: params.time("received_from"),
            received_to: params.time("received_to"),
            client_from: params.time("client_from"),
            client_to: params.time("client_to"),
        };
        check_range(params, "from", filter.from, "to", filter.to);
        check_range(
            params,
            "client_from",
            filter.client_from,
            "client_to",
            filter.client_to,
        );
        check_range(
            params,
            "received_from",
            filter.received_from,
            "received_to",
            filter.received_to,
        );
        filter
    }
}

/// Filters of `GET /api/errors`.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ErrorFilterParams {
    /// Only rejections of this application.
    #[param(min_length = 1)]
    pub application: Option<String>,
    /// Only rejections with a problem of this code, e.g. `invalid_timestamp`.
    #[param(min_length = 1)]
    pub code: Option<String>,
    /// Only rejections with a problem at this field, e.g. `timestamp` (with `code`: the same
    /// problem has both).
    #[param(min_length = 1)]
    pub field: Option<String>,
    /// Rejections received at or after this RFC 3339 time (inclusive), from 1900-01-01 to
    /// 2299-12-31 (`time_out_of_range` otherwise).
    pub from: Option<DateTime<Utc>>,
    /// Rejections received before this RFC 3339 time (exclusive); later than `from` when
    /// both are given (`400 invalid_parameters` otherwise).
    pub to: Option<DateTime<Utc>>,
    /// Only rejections of this event category (as far as it could be read).
    #[param(min_length = 1)]
    pub category: Option<String>,
    /// Only rejections of this event name (as far as it could be read).
    #[param(min_length = 1)]
    pub name: Option<String>,
    /// `true`: only rejections a replay recovered; `false`: only those still outstanding.
    pub recovered: Option<bool>,
}

impl ErrorFilterParams {
    pub const NAMES: &'static [&'static str] = &[
        "application",
        "code",
        "field",
        "from",
        "to",
        "category",
        "name",
        "recovered",
    ];

    pub fn take(params: &mut Params) -> Self {
        let filter = Self {
            application: params.text("application"),
            code: params.text("code"),
            field: params.text("field"),
            from: params.time("from"),
            to: params.time("to"),
            category: params.text("category"),
            name: params.text("name"),
            recovered: params.boolean("recovered"),
        };
        check_range(params, "from", filter.from, "to", filter.to);
        filter
    }
}

/// Pagination of every listing.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, with the same filters and order; absent for the
    /// first page. Opaque — 67 characters of URL-safe base64 without padding, a checksum
    /// included — and only cursors this API produced for the same listing, filters and order
    /// are accepted (`invalid_cursor` otherwise: a rule the document cannot state).
    #[param(min_length = 67, max_length = 67, pattern = "^[A-Za-z0-9_-]{67}$")]
    pub cursor: Option<String>,
    /// `asc` (oldest first) or `desc` (newest first). Events default to `asc`, errors to `desc`.
    #[param(inline)]
    pub order: Option<SortOrder>,
}

impl PageParams {
    pub const NAMES: &'static [&'static str] = &["limit", "cursor", "order"];

    pub fn take(params: &mut Params, default_order: SortOrder) -> Self {
        Self {
            limit: Some(params.limit()),
            cursor: params.cursor(),
            order: Some(params.order(default_order)),
        }
    }
}

/// Records a problem at `to_name` unless `from` is earlier than `to` (both given).
pub fn check_range(
    params: &mut Params,
    from_name: &str,
    from: Option<DateTime<Utc>>,
    to_name: &'static str,
    to: Option<DateTime<Utc>>,
) {
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            params.problem(
                to_name,
                codes::INVALID_PARAMETER,
                format!("`{to_name}` must be later than `{from_name}` (`{to_name}` is exclusive)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(raw: &str, take: impl FnOnce(&mut Params)) -> Vec<(String, String)> {
        let mut params = Params::parse(Some(raw));
        take(&mut params);
        match params.finish() {
            Ok(()) => Vec::new(),
            Err(ApiError::BadRequest { problems, code, .. }) => {
                assert_eq!(code, codes::INVALID_PARAMETERS);
                problems.into_iter().map(|p| (p.field, p.code)).collect()
            }
            Err(other) => panic!("{other:?}"),
        }
    }

    fn events(params: &mut Params) {
        EventFilterParams::take(params);
        PageParams::take(params, SortOrder::Asc);
    }

    #[test]
    fn good_parameters_pass_and_decode() {
        let mut params = Params::parse(Some(
            "category=page%20interaction&from=2025-01-01T00:00:00%2B02:00&to=2025-01-02T00:00:00Z&limit=1000&order=desc&name=a%26b",
        ));
        let filter = EventFilterParams::take(&mut params);
        let page = PageParams::take(&mut params, SortOrder::Asc);
        params.finish().unwrap();
        assert_eq!(filter.category.as_deref(), Some("page interaction"));
        assert_eq!(filter.name.as_deref(), Some("a&b"));
        assert_eq!(
            filter.from.unwrap().to_rfc3339(),
            "2024-12-31T22:00:00+00:00"
        );
        assert_eq!(page.limit, Some(1000));
        assert_eq!(page.order, Some(SortOrder::Desc));
        let mut params = Params::parse(None);
        let page = PageParams::take(&mut params, SortOrder::Desc);
        params.finish().unwrap();
        assert_eq!(page.limit, Some(DEFAULT_LIMIT));
        assert_eq!(page.order, Some(SortOrder::Desc));
    }

    #[test]
    fn every_bad_parameter_is_reported_together() {
        let found = problems(
            "from=yesterday&to=2025-01-01T00:00:00+02:00&limit=0&order=up&colour=red&category=&name=a&name=b&colour=blue",
            events,
        );
        let expected = [
            ("name", codes::DUPLICATE_PARAMETER),
            ("category", codes::INVALID_PARAMETER),
            ("from", codes::INVALID_PARAMETER),
            ("to", codes::INVALID_PARAMETER),
            ("limit", codes::INVALID_PARAMETER),
            ("order", codes::INVALID_PARAMETER),
            ("colour", codes::UNKNOWN_PARAMETER),
        ];
        assert_eq!(found.len(), expected.len(), "{found:?}");
        for (field, code) in expected {
            assert!(
                found.iter().any(|(f, c)| f == field && c == code),
                "{field} {code}: {found:?}"
            );
        }
    }

    #[test]
    fn limits_and_ranges_are_checked() {
        for bad in ["limit=1001", "limit=-1", "limit=ten", "limit=", "limit=1.5"] {
            assert_eq!(
                problems(bad, events),
                [("limit".to_owned(), codes::INVALID_PARAMETER.to_owned())],
                "{bad}"
            );
        }
        assert!(problems("limit=1", events).is_empty());
        assert_eq!(
            problems("from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z", events),
            [("to".to_owned(), codes::INVALID_PARAMETER.to_owned())]
        );
        assert_eq!(
            problems("session_id=s", |params| {
                ErrorFilterParams::take(params);
                PageParams::take(params, SortOrder::Desc);
            }),
            [("session_id".to_owned(), codes::UNKNOWN_PARAMETER.to_owned())]
        );
    }
}
