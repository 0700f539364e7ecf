//! The `Prefer` request header (RFC 7240) as `POST /api/events` reads it: only the `return`
//! preference means anything here, and `return=minimal` asks for an answer that lists only
//! what the client cannot know ([`crate::ingest::Return`]). Every other preference, and any
//! header that cannot be read, is ignored, as RFC 7240 §2 asks of a server.

use axum::http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::ingest::Return;

/// The request header (RFC 7240 §2).
pub static PREFER: HeaderName = HeaderName::from_static("prefer");

/// The answer's header naming the preferences honoured (RFC 7240 §3).
pub static PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// The value of `Preference-Applied` on an answer shortened by `return=minimal`.
pub const RETURN_MINIMAL: HeaderValue = HeaderValue::from_static("return=minimal");

/// What the request's `Prefer` headers ask of the answer: [`Return::Minimal`] when a
/// `return=minimal` preference is among them, else [`Return::Representation`] (the default,
/// also for `return=representation`). Every `Prefer` header counts, each a comma-separated
/// list of preferences `token [= value] *(; parameter)`; tokens are case-insensitive, the
/// value may be quoted, whitespace around the parts is tolerated, parameters and unknown
/// preferences are ignored. When `return` appears more than once the first one decides
/// (RFC 7240 §2: "the first instance of the preference is used").
pub fn wanted_return(headers: &HeaderMap) -> Return {
    headers
        .get_all(&PREFER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(return_value)
        .unwrap_or(Return::Representation)
}

/// The value of one preference if it is `return`: `None` for any other preference.
fn return_value(preference: &str) -> Option<Return> {
    // Parameters follow the first `;`; they never change what `return` asks for.
    let head = preference.split(';').next().unwrap_or("");
    let (token, value) = head.split_once('=').unwrap_or((head, ""));
    if !token.trim().eq_ignore_ascii_case("return") {
        return None;
    }
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|value| value.strip_suffix('"'))
        .unwrap_or(value);
    Some(if value.eq_ignore_ascii_case("minimal") {
        Return::Minimal
    } else {
        Return::Representation
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(values: &[&str]) -> Return {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(&PREFER, HeaderValue::from_str(value).unwrap());
        }
        wanted_return(&headers)
    }

    #[test]
    fn return_minimal_is_read_wherever_it_stands() {
        assert_eq!(wanted(&["return=minimal"]), Return::Minimal);
        assert_eq!(wanted(&["RETURN=Minimal"]), Return::Minimal);
        assert_eq!(wanted(&["  return = minimal  "]), Return::Minimal);
        assert_eq!(wanted(&["return=\"minimal\""]), Return::Minimal);
        assert_eq!(
            wanted(&["respond-async, return=minimal; foo=bar"]),
            Return::Minimal
        );
        assert_eq!(wanted(&["wait=10,return=minimal"]), Return::Minimal);
        assert_eq!(
            wanted(&["respond-async", "return=minimal"]),
            Return::Minimal
        );
        assert_eq!(
            wanted(&["handling=lenient; x=\"a,b\""]),
            Return::Representation
        );
    }

    #[test]
    fn anything_else_keeps_the_full_answer() {
        assert_eq!(wanted(&[]), Return::Representation);
        assert_eq!(wanted(&["return=representation"]), Return::Representation);
        assert_eq!(wanted(&["respond-async"]), Return::Representation);
        assert_eq!(wanted(&["returns=minimal"]), Return::Representation);
        assert_eq!(wanted(&["return"]), Return::Representation);
        assert_eq!(wanted(&["return=minimalist"]), Return::Representation);
        assert_eq!(wanted(&["foo; return=minimal"]), Return::Representation);
        assert_eq!(wanted(&[""]), Return::Representation);
    }

    #[test]
    fn the_first_return_preference_decides() {
        assert_eq!(
            wanted(&["return=representation, return=minimal"]),
            Return::Representation
        );
        assert_eq!(
            wanted(&["return=minimal", "return=representation"]),
            Return::Minimal
        );
    }

    #[test]
    fn a_header_that_is_not_text_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.append(
            &PREFER,
            HeaderValue::from_bytes(b"return=\xffminimal").unwrap(),
        );
        headers.append(&PREFER, HeaderValue::from_static("return=minimal"));
        assert_eq!(wanted_return(&headers), Return::Minimal);
    }
}
