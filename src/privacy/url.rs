//! The query-parameter allowlist of URL-valued properties (docs/personal-data.md, "URLs").
//!
//! Query strings carry what nobody meant to keep: reset tokens, `?email=`, session ids of
//! other systems. Each application lists the parameters it keeps (`utm_*` by default); the
//! others are removed from the URL-valued properties of `data` before anything is stored.
//! Pure text functions over what the client sent: nothing is decoded or re-encoded, so a kept
//! parameter is stored byte for byte as sent.

/// The allowlist of an application that set none: the campaign parameters.
pub const DEFAULT_ALLOWLIST: [&str; 1] = ["utm_*"];

/// Whether parameter `name` (as sent, not decoded) is kept by `allow`: an entry `*` keeps
/// every parameter, an entry ending in `*` keeps the names it starts, any other entry keeps
/// that name; names compare without regard to ASCII case.
pub fn allowed(name: &str, allow: &[String]) -> bool {
    allow.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => {
            name.len() >= prefix.len()
                && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
        None => name.eq_ignore_ascii_case(entry),
    })
}

/// A URL or path (`/a?b=c#d`, `https://host/a?b=c`) with the parameters `allow` does not keep
/// removed from its query, and from its fragment when that is parameters too (`#access_token=`,
/// as OAuth's implicit flow leaves them); `None` when nothing was removed. A query left empty
/// loses its `?`.
pub fn filter_url(url: &str, allow: &[String]) -> Option<String> {
    // Most URL-valued properties are bare paths, from which nothing can be removed: one pass
    // over the bytes says so, where the two searches below cost ~200 instructions per
    // property (issue 34).
    if !holds_query_or_fragment(url.as_bytes()) {
        return None;
    }
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (url, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (before_fragment, None),
    };
    let query_kept = query.map(|query| filter_query(query, allow));
    let fragment_kept = fragment
        .filter(|fragment| fragment.contains('='))
        .map(|fragment| filter_query(fragment, allow));
    if query_kept.as_ref().is_none_or(Option::is_none)
        && fragment_kept.as_ref().is_none_or(Option::is_none)
    {
        return None;
    }
    let mut out = String::with_capacity(url.len());
    out.push_str(base);
    if let Some(query) = query {
        let kept = query_kept.flatten().unwrap_or_else(|| query.to_owned());
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept);
        }
    }
    if let Some(fragment) = fragment {
        let kept = fragment_kept
            .flatten()
            .unwrap_or_else(|| fragment.to_owned());
        if !kept.is_empty() {
            out.push('#');
            out.push_str(&kept);
        }
    }
    Some(out)
}

/// Whether `bytes` holds a `?` or a `#`, eight bytes at a time (the same answer as looking
/// byte by byte; a test compares them).
fn holds_query_or_fragment(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some lane of `word` is zero: exact (no false positive across lanes).
    let zero_lane = |word: u64| word.wrapping_sub(ONES) & !word & HIGH != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut lanes = [0; 8];
        lanes.copy_from_slice(word);
        let word = u64::from_ne_bytes(lanes);
        if zero_lane(word ^ (ONES * u64::from(b'?'))) || zero_lane(word ^ (ONES * u64::from(b'#')))
        {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b == b'?' || b == b'#')
}

/// A bare query string (`a=1&b=2`, as the browser SDK sends in `query`) with the parameters
/// `allow` does not keep removed; `None` when nothing was removed.
pub fn filter_query(query: &str, allow: &[String]) -> Option<String> {
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            if pair.is_empty() {
                return false;
            }
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            let keep = allowed(name, allow);
            removed |= !keep;
            keep
        })
        .collect();
    removed.then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn keeps_only_allowed_parameters() {
        let allow = list(&DEFAULT_ALLOWLIST);
        assert_eq!(
            filter_url(
                "/reset?token=abc&utm_source=mail&email=jane%40example.com",
                &allow
            )
            .as_deref(),
            Some("/reset?utm_source=mail")
        );
        assert_eq!(filter_url("/a?token=abc", &allow).as_deref(), Some("/a"));
        assert_eq!(
            filter_url("https://x.example/cb#access_token=t&state=1", &allow).as_deref(),
            Some("https://x.example/cb")
        );
        assert_eq!(filter_url("/a?UTM_Medium=x#section", &allow), None);
        assert_eq!(filter_url("/plain/path", &allow), None);
        assert_eq!(
            filter_query("q=shoes&utm_campaign=w", &allow).as_deref(),
            Some("utm_campaign=w")
        );
        let allow = list(&["utm_*", "q", "page"]);
        assert_eq!(
            filter_url("/s?q=shoes&page=2&email=a", &allow).as_deref(),
            Some("/s?q=shoes&page=2")
        );
        assert_eq!(filter_url("/s?q=1&anything=2", &list(&["*"])), None);
    }

    #[test]
    fn the_word_wise_look_for_a_query_or_fragment_agrees_with_a_byte_wise_one() {
        let texts = [
            "",
            "?",
            "#",
            "/plain/path",
            "/products/widgets?",
            "/products/widgets#",
            "/a/b/c/d/e/f/g/h?x",
            "https://www.example.com/a/b#section",
            "/é/ü/?q=1",
            "/??##",
            "/%3F/%23/ percent-escapes are not a query",
            "/a\u{7f}\u{80}\u{ff}/c",
            "/\u{bf}\u{a3}\u{3e}\u{40}\u{22}\u{24}",
        ];
        for text in texts {
            for start in 0..text.len() {
                let Some(text) = text.get(start..) else {
                    continue;
                };
                let bytes = text.as_bytes();
                assert_eq!(
                    holds_query_or_fragment(bytes),
                    bytes.iter().any(|&b| b == b'?' || b == b'#'),
                    "{text:?}"
                );
            }
        }
        // Every byte value, at every position of a word and of the remainder.
        for byte in 0..=u8::MAX {
            for at in 0..13 {
                let mut bytes = vec![b'a'; 13];
                bytes[at] = byte;
                assert_eq!(
                    holds_query_or_fragment(&bytes),
                    byte == b'?' || byte == b'#',
                    "{byte} at {at}"
                );
            }
        }
    }
}
