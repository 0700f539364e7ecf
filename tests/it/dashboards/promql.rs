//! The metric names a PromQL expression selects, without a full parser: identifiers outside
//! label matchers (`{…}`), ranges (`[…]`), strings and label lists (`by (…)`, `on (…)`…),
//! that are neither functions (followed by `(`) nor keywords nor numbers. Grafana variables
//! (`$instance`, `$__rate_interval`) are skipped.

use std::collections::BTreeSet;

/// Keywords followed by a list of label names, which are not metrics.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Aggregation operators, which may take their `by`/`without` clause before the `(`.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Operators and modifiers spelled as words.
const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

fn is_identifier_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index just past the bracketed region opening at `start` (`open`…`close`), skipping
/// string literals inside it.
fn skip_bracketed(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i) - 1,
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// Metric names selected by `expr`.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_bracketed(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_bracketed(&chars, i, '[', ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_bracketed(&chars, i, '{', '}');
            } else {
                while i < chars.len() && is_identifier_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_identifier_start(c) {
            let start = i;
            while i < chars.len() && is_identifier_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let rest: String = chars[next..].iter().take(8).collect();
            let grouped = ["by", "without"].iter().any(|keyword| {
                rest.strip_prefix(keyword)
                    .is_some_and(|after| after.starts_with([' ', '(', '\n', '\t']))
            });
            let called =
                chars.get(next) == Some(&'(') || (grouped && AGGREGATIONS.contains(&word.as_str()));
            if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                if called {
                    i = skip_bracketed(&chars, next, '(', ')');
                }
            } else if !called && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names of a Prometheus variable query: `label_values(selector, label)` selects
/// from `selector`; `query_result(expr)` from `expr`; `metrics(…)` and a bare
/// `label_values(label)` name no metric.
pub fn variable_metric_names(query: &str) -> BTreeSet<String> {
    let query = query.trim();
    if let Some(inner) = query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return match inner.rfind(',') {
            Some(comma) => metric_names(&inner[..comma]),
            None => BTreeSet::new(),
        };
    }
    if let Some(inner) = query
        .strip_prefix("query_result(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return metric_names(inner);
    }
    if query.starts_with("metrics(") || query.starts_with("label_names(") {
        return BTreeSet::new();
    }
    metric_names(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn selectors_functions_and_label_lists() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{route="/x{y}", le=~"1"}[5m]))) > 0.1
                   unless on (job) b_total offset 5m"#
            ),
            ["a_bucket", "b_total"]
        );
        assert_eq!(
            names(
                r#"sum(rate(x_total{instance=~"$instance"}[$__rate_interval])) by (code) / ignoring(code) group_left y"#
            ),
            ["x_total", "y"]
        );
        assert_eq!(names(r#"up{job="the-eye"} == 0"#), ["up"]);
        assert_eq!(
            names("max by (table) (depth / capacity) > 0.8 and bool 1e3"),
            ["capacity", "depth"]
        );
        assert_eq!(names("ns:recorded:rate5m"), ["ns:recorded:rate5m"]);
        assert_eq!(
            names("count without (instance) (c) + topk by (x) (3, d)"),
            ["c", "d"]
        );
    }

    #[test]
    fn variable_queries() {
        assert_eq!(
            variable_metric_names(r#"label_values(the_eye_build_info{job="the-eye"}, instance)"#)
                .into_iter()
                .collect::<Vec<_>>(),
            ["the_eye_build_info"]
        );
        assert!(variable_metric_names("label_values(instance)").is_empty());
        assert_eq!(
            variable_metric_names("query_result(topk(5, a_total))")
                .into_iter()
                .collect::<Vec<_>>(),
            ["a_total"]
        );
    }
}
