//! What Grafana's frontend does to a ClickHouse panel's SQL before the plugin's backend sees
//! it (`CHDatasource.applyTemplateVariables` in the plugin, 4.x): first `$__conditionalAll`,
//! then dashboard variables through Grafana's template service with the plugin's format.
//!
//! - `$__conditionalAll(condition, $var)` becomes `1=1` when `$var` is empty or All
//!   (`$__all`), else `condition`.
//! - `$var`, `${var}`, `[[var]]` take the plugin's format: a multi-value selection becomes
//!   `'a','b'`, a single value is inserted as it is.
//! - `${var:singlequote}` quotes each value, escaping `'` as `\'`; `${var:sqlstring}` escapes
//!   `'` as `''`; `${var:csv}` joins with commas; `${var:raw}` inserts as it is.
//!
//! Names that are not dashboard variables (the backend's `$__timeFilter` and friends) are
//! left for the backend.

use std::collections::BTreeMap;

/// The current value of each dashboard variable (`["$__all"]` for All).
pub type Values = BTreeMap<String, Vec<String>>;

/// The arguments of the macro whose `(` is at `open`, split on commas at depth one, as the
/// plugin's `getMacroArgs` does (no quote handling).
fn macro_arguments(sql: &str, open: usize) -> Option<(Vec<String>, usize)> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut last = open + 1;
    for (offset, c) in sql[open..].char_indices() {
        let at = open + offset;
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    args.push(sql[last..at].to_owned());
                    return Some((args, at));
                }
            }
            ',' if depth == 1 => {
                args.push(sql[last..at].to_owned());
                last = at + 1;
            }
            _ => {}
        }
    }
    None
}

/// The variable name in `$name` or `${name}` (with optional `:format`).
fn variable_name(text: &str) -> Option<&str> {
    let text = text.trim();
    let name = if let Some(braced) = text.strip_prefix("${") {
        braced.split(['}', ':']).next()?
    } else {
        text.strip_prefix('$')?
    };
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// Expands every `$__conditionalAll(...)`, last one first, as the plugin does.
pub fn conditional_all(sql: &str, values: &Values) -> String {
    const MACRO: &str = "$__conditionalAll(";
    let mut sql = sql.to_owned();
    while let Some(start) = sql.rfind(MACRO) {
        let open = start + MACRO.len() - 1;
        let Some((args, close)) = macro_arguments(&sql, open) else {
            return sql;
        };
        if args.len() != 2 {
            return sql;
        }
        let mut phrase = args[0].clone();
        if let Some(name) = variable_name(&args[1]) {
            let current = values.get(name).map(|values| values.join(","));
            if matches!(current.as_deref(), Some("" | "$__all")) {
                phrase = "1=1".to_owned();
            }
        }
        sql.replace_range(start..=close, &phrase);
    }
    sql
}

fn format(values: &[String], format: Option<&str>) -> Result<String, String> {
    let quoted = |escape: fn(&str) -> String| {
        values
            .iter()
            .map(|value| format!("'{}'", escape(value)))
            .collect::<Vec<_>>()
            .join(",")
    };
    Ok(match format {
        None => match values {
            [single] => single.clone(),
            many => format!("'{}'", many.join("','")),
        },
        Some("singlequote") => quoted(|value| value.replace('\'', "\\'")),
        Some("sqlstring") => quoted(|value| value.replace('\'', "''")),
        Some("csv") => values.join(","),
        Some("raw") => values.join(","),
        Some(other) => return Err(format!("variable format `{other}` is not emulated")),
    })
}

/// Substitutes the dashboard variables in `sql` (after [`conditional_all`]). A variable
/// whose value is still All must have been removed by `$__conditionalAll`.
pub fn substitute(sql: &str, values: &Values) -> Result<String, String> {
    let sql = conditional_all(sql, values);
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql.as_str();
    while let Some(position) = rest.find(['$', '[']) {
        out.push_str(&rest[..position]);
        rest = &rest[position..];
        let (name, fmt, length) = if let Some(braced) = rest.strip_prefix("${") {
            let Some(end) = braced.find('}') else {
                out.push_str(rest);
                rest = "";
                break;
            };
            let inner = &braced[..end];
            let (name, fmt) = match inner.split_once(':') {
                Some((name, fmt)) => (name, Some(fmt)),
                None => (inner, None),
            };
            (name, fmt, end + 3)
        } else if let Some(bracketed) = rest.strip_prefix("[[") {
            match bracketed.find("]]") {
                Some(end) => (&bracketed[..end], None, end + 4),
                None => ("", None, 1),
            }
        } else if let Some(plain) = rest.strip_prefix('$') {
            let end = plain
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(plain.len());
            (&plain[..end], None, end + 1)
        } else {
            ("", None, 1)
        };
        match values.get(name) {
            Some(current) => {
                if current.iter().any(|value| value == "$__all") {
                    return Err(format!(
                        "variable `{name}` is All where $__conditionalAll does not guard it"
                    ));
                }
                out.push_str(&format(current, fmt)?);
                rest = &rest[length..];
            }
            None => {
                out.push_str(&rest[..1]);
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &[&str])]) -> Values {
        pairs
            .iter()
            .map(|(name, values)| {
                (
                    name.to_string(),
                    values.iter().map(|value| value.to_string()).collect(),
                )
            })
            .collect()
    }

    const FILTER: &str =
        "WHERE $__timeFilter_ms(t) AND $__conditionalAll(app IN (${app:singlequote}), $app)";

    #[test]
    fn conditional_all_drops_the_condition_for_all_and_empty() {
        for current in [&["$__all"][..], &[""][..]] {
            assert_eq!(
                substitute(FILTER, &values(&[("app", current)])).unwrap(),
                "WHERE $__timeFilter_ms(t) AND 1=1"
            );
        }
    }

    #[test]
    fn conditional_all_keeps_the_condition_for_a_selection() {
        assert_eq!(
            substitute(FILTER, &values(&[("app", &["web", "o'neil"])])).unwrap(),
            "WHERE $__timeFilter_ms(t) AND app IN ('web','o\\'neil')"
        );
    }

    #[test]
    fn formats_of_single_and_multiple_values() {
        let v = values(&[("s", &["a'b"]), ("m", &["x", "y"])]);
        assert_eq!(substitute("$s ${s} [[s]]", &v).unwrap(), "a'b a'b a'b");
        assert_eq!(substitute("${s:sqlstring}", &v).unwrap(), "'a''b'");
        assert_eq!(substitute("${s:singlequote}", &v).unwrap(), "'a\\'b'");
        assert_eq!(substitute("$m", &v).unwrap(), "'x','y'");
        assert_eq!(substitute("${m:csv}", &v).unwrap(), "x,y");
        assert_eq!(
            substitute("$__timeInterval(t) $other [1]", &v).unwrap(),
            "$__timeInterval(t) $other [1]"
        );
    }

    #[test]
    fn an_unguarded_all_is_an_error() {
        let v = values(&[("app", &["$__all"])]);
        assert!(substitute("app IN (${app:singlequote})", &v).is_err());
    }
}
