//! The ClickHouse Grafana plugin's backend macros, expanded as the plugin (4.x,
//! `pkg/macros/macros.go`) expands them before it sends a panel's SQL to ClickHouse, so that
//! the tests can run the dashboards' queries exactly as Grafana would.
//!
//! Rules, as the plugin applies them: comments are blanked first (a macro inside one is never
//! expanded); macros inside string literals and quoted identifiers are left alone; unknown
//! `$__names` are left as they are; arguments are split on top-level commas and trimmed; a
//! wrong argument count is an error. F and T are the range's ends in Unix seconds (ms for the
//! `_ms` forms), truncated; the interval is the panel's, at least 1 s (1 ms).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// What a panel query is run with: the dashboard's time range and the panel's interval.
#[derive(Debug, Clone, Copy)]
pub struct QueryRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub interval: Duration,
}

/// The macros the plugin knows. Names are read whole, so `$__timeFilter_ms` is never taken
/// for `$__timeFilter`.
const MACROS: [&str; 12] = [
    "fromTime",
    "toTime",
    "fromTime_ms",
    "toTime_ms",
    "timeFilter",
    "timeFilter_ms",
    "dateFilter",
    "dateTimeFilter",
    "dt",
    "timeInterval",
    "timeInterval_ms",
    "interval_s",
];

fn date_time(at: DateTime<Utc>) -> String {
    format!("toDateTime({})", at.timestamp())
}

fn date_time64(at: DateTime<Utc>) -> String {
    format!("fromUnixTimestamp64Milli({})", at.timestamp_millis())
}

fn date(at: DateTime<Utc>) -> String {
    format!("toDate('{}')", at.format("%Y-%m-%d"))
}

fn arguments(name: &str, args: &[String], expected: usize) -> Result<(), String> {
    if args.len() != expected {
        return Err(format!(
            "$__{name}: unexpected number of arguments: expected {expected}, received {}",
            args.len()
        ));
    }
    Ok(())
}

/// One macro's expansion.
fn apply(name: &str, args: &[String], range: &QueryRange) -> Result<String, String> {
    let (from, to) = (range.from, range.to);
    let seconds = (range.interval.as_secs_f64().max(1.0)) as u64;
    let millis = (range.interval.as_millis() as u64).max(1);
    Ok(match name {
        "fromTime" => date_time(from),
        "toTime" => date_time(to),
        "fromTime_ms" => date_time64(from),
        "toTime_ms" => date_time64(to),
        "timeFilter" => {
            arguments(name, args, 1)?;
            let column = &args[0];
            format!(
                "{column} >= {} AND {column} <= {}",
                date_time(from),
                date_time(to)
            )
        }
        "timeFilter_ms" => {
            arguments(name, args, 1)?;
            let column = &args[0];
            format!(
                "{column} >= {} AND {column} <= {}",
                date_time64(from),
                date_time64(to)
            )
        }
        "dateFilter" => {
            arguments(name, args, 1)?;
            let column = &args[0];
            format!("{column} >= {} AND {column} <= {}", date(from), date(to))
        }
        "dateTimeFilter" | "dt" => {
            arguments(name, args, 2)?;
            let (day, time) = (&args[0], &args[1]);
            format!(
                "({day} >= {} AND {day} <= {}) AND ({time} >= {} AND {time} <= {})",
                date(from),
                date(to),
                date_time(from),
                date_time(to)
            )
        }
        "timeInterval" => {
            arguments(name, args, 1)?;
            format!(
                "toStartOfInterval(toDateTime({}), INTERVAL {seconds} second)",
                args[0]
            )
        }
        "timeInterval_ms" => {
            arguments(name, args, 1)?;
            format!(
                "toStartOfInterval(toDateTime64({}, 3), INTERVAL {millis} millisecond)",
                args[0]
            )
        }
        "interval_s" => seconds.to_string(),
        other => unreachable!("unknown macro {other}"),
    })
}

/// Replaces `--` and `/* */` comments (outside quotes) with spaces of the same length.
fn blank_comments(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => {
                let end = quoted_end(sql, i);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = sql[i..].find(['\n', '\r']).map_or(sql.len(), |n| i + n);
                out.extend(std::iter::repeat_n(' ', end - i));
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = sql[i + 2..].find("*/").map_or(sql.len(), |n| i + 2 + n + 2);
                out.extend(std::iter::repeat_n(' ', end - i));
                i = end;
            }
            _ => {
                let c = sql[i..].chars().next().expect("a character");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// The index just past the quoted region opening at `start` (ClickHouse's rules: a doubled
/// quote or a backslash escape continues it; an unterminated one runs to the end).
fn quoted_end(sql: &str, start: usize) -> usize {
    let bytes = sql.as_bytes();
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            i += 2;
        } else if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// The index of the `)` closing the `(` at `open`, skipping quoted regions.
fn closing_paren(sql: &str, open: usize) -> Result<usize, String> {
    let bytes = sql.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => {
                i = quoted_end(sql, i);
                continue;
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(format!("unbalanced parentheses after position {open}"))
}

/// Splits macro arguments on top-level commas, trimming each; none for a blank list.
fn split_arguments(raw: &str) -> Vec<String> {
    if raw.trim().is_empty() {
        return Vec::new();
    }
    let bytes = raw.as_bytes();
    let (mut args, mut depth, mut start, mut i) = (Vec::new(), 0usize, 0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => {
                i = quoted_end(raw, i);
                continue;
            }
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                args.push(raw[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    args.push(raw[start..].trim().to_owned());
    args
}

/// `sql` with every macro expanded for `range`.
pub fn expand(sql: &str, range: &QueryRange) -> Result<String, String> {
    let sql = blank_comments(sql);
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => {
                let end = quoted_end(&sql, i);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'$' if sql[i..].starts_with("$__") => {
                let name_start = i + 3;
                let name_end = sql[name_start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(sql.len(), |n| name_start + n);
                let name = &sql[name_start..name_end];
                if !MACROS.contains(&name) {
                    out.push_str(&sql[i..name_end]);
                    i = name_end;
                    continue;
                }
                let (args, end) = if bytes.get(name_end) == Some(&b'(') {
                    let close = closing_paren(&sql, name_end)?;
                    (split_arguments(&sql[name_end + 1..close]), close + 1)
                } else {
                    (Vec::new(), name_end)
                };
                out.push_str(&apply(name, &args, range)?);
                i = end;
            }
            _ => {
                let c = sql[i..].chars().next().expect("a character");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2021-01-01 09:15:27.243 to 2021-01-02 10:15:27.987 UTC, interval 30.7 s.
    fn range() -> QueryRange {
        QueryRange {
            from: DateTime::from_timestamp_millis(1_609_492_527_243).unwrap(),
            to: DateTime::from_timestamp_millis(1_609_582_527_987).unwrap(),
            interval: Duration::from_millis(30_700),
        }
    }

    fn expanded(sql: &str) -> String {
        expand(sql, &range()).unwrap()
    }

    #[test]
    fn time_filters_at_second_and_millisecond_precision() {
        assert_eq!(
            expanded("WHERE $__timeFilter(received_at)"),
            "WHERE received_at >= toDateTime(1609492527) AND received_at <= toDateTime(1609582527)"
        );
        assert_eq!(
            expanded("WHERE $__timeFilter_ms( received_at )"),
            "WHERE received_at >= fromUnixTimestamp64Milli(1609492527243) AND received_at <= fromUnixTimestamp64Milli(1609582527987)"
        );
    }

    #[test]
    fn range_ends() {
        assert_eq!(expanded("$__fromTime"), "toDateTime(1609492527)");
        assert_eq!(expanded("$__toTime"), "toDateTime(1609582527)");
        assert_eq!(
            expanded("$__fromTime_ms"),
            "fromUnixTimestamp64Milli(1609492527243)"
        );
        assert_eq!(
            expanded("$__toTime_ms"),
            "fromUnixTimestamp64Milli(1609582527987)"
        );
    }

    #[test]
    fn date_filters() {
        assert_eq!(
            expanded("$__dateFilter(day)"),
            "day >= toDate('2021-01-01') AND day <= toDate('2021-01-02')"
        );
        let both = "(day >= toDate('2021-01-01') AND day <= toDate('2021-01-02')) AND \
                    (ts >= toDateTime(1609492527) AND ts <= toDateTime(1609582527))";
        assert_eq!(expanded("$__dateTimeFilter(day, ts)"), both);
        assert_eq!(expanded("$__dt(day, ts)"), both);
    }

    #[test]
    fn intervals_are_whole_units_and_at_least_one() {
        assert_eq!(
            expanded("$__timeInterval(timestamp)"),
            "toStartOfInterval(toDateTime(timestamp), INTERVAL 30 second)"
        );
        assert_eq!(
            expanded("$__timeInterval_ms(timestamp)"),
            "toStartOfInterval(toDateTime64(timestamp, 3), INTERVAL 30700 millisecond)"
        );
        assert_eq!(expanded("$__interval_s"), "30");
        let tiny = QueryRange {
            interval: Duration::from_micros(200),
            ..range()
        };
        assert_eq!(expand("$__interval_s", &tiny).unwrap(), "1");
        assert_eq!(
            expand("$__timeInterval_ms(t)", &tiny).unwrap(),
            "toStartOfInterval(toDateTime64(t, 3), INTERVAL 1 millisecond)"
        );
    }

    #[test]
    fn nested_arguments_strings_comments_and_unknown_macros() {
        assert_eq!(
            expanded("$__timeFilter(toDateTime(coalesce(a, b)))"),
            "toDateTime(coalesce(a, b)) >= toDateTime(1609492527) AND toDateTime(coalesce(a, b)) <= toDateTime(1609582527)"
        );
        assert_eq!(
            expanded("SELECT '$__fromTime' AS literal, $__fromTime AS t"),
            "SELECT '$__fromTime' AS literal, toDateTime(1609492527) AS t"
        );
        let line_comment = "-- $__timeFilter()";
        let block_comment = "/* $__toTime */";
        assert_eq!(
            expanded(&format!(
                "SELECT 1 {line_comment}\n{block_comment} , $__unknown(x), $__conditionalAll(a, $b)"
            )),
            format!(
                "SELECT 1 {}\n{} , $__unknown(x), $__conditionalAll(a, $b)",
                " ".repeat(line_comment.len()),
                " ".repeat(block_comment.len())
            )
        );
    }

    #[test]
    fn a_wrong_argument_count_is_an_error() {
        for sql in [
            "$__timeFilter",
            "$__timeFilter(a, b)",
            "$__dt(a)",
            "$__timeInterval()",
        ] {
            let error = expand(sql, &range()).unwrap_err();
            assert!(
                error.contains("unexpected number of arguments"),
                "{sql}: {error}"
            );
        }
        assert!(expand("$__timeFilter(a", &range()).is_err());
    }
}
