//! The detector of personal data nobody declared: e-mail addresses, payment card numbers and
//! phone numbers inside strings (docs/personal-data.md, "The detector").
//!
//! Pure text functions; what is done with a finding (count it, mask it) is the application's
//! policy, applied by [`super::Privacy`]. Tuned to miss rather than to cry wolf on the values
//! analytics events are full of — UUIDs, timestamps, dates, IP addresses, hex ids:
//! - **e-mail**: `local@domain.tld` anywhere in a string; the local part of letters, digits
//!   and `._%+-`, the domain of at least two labels of letters, digits and `-`, its last
//!   label of 2 or more letters;
//! - **card**: 13 to 19 digits that pass the Luhn check, written as one run or in groups of
//!   4 (`4111 1111 1111 1111`, `4111-…`), 4-6-5 (American Express) or 4-6-4 (Diners),
//!   starting as a card number does (3, 4, 5, 6 or 2221–2720; see [`issuer`]), not
//!   touching a letter, digit or `-` on either side — so no part of a UUID
//!   (8-4-4-4-12 hex) ever is one;
//! - **phone**: a whole string of digits, spaces, `-`, `(`, `)` and an optional leading `+`,
//!   with 10 to 15 digits and at least one separator or the `+` (a bare run of digits is more
//!   often an id or a timestamp than a phone number).

use std::ops::Range;

/// What the detector found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Email,
    Card,
    Phone,
}

impl Kind {
    /// The metric label and documentation name: `email`, `card`, `phone`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Card => "card",
            Self::Phone => "phone",
        }
    }
}

/// One finding: its kind and its byte range in the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    pub range: Range<usize>,
}

/// Every finding in `text`, in order, not overlapping. Costs one pass over the bytes when
/// the string holds no `@` and fewer than 10 digits (most values), a few passes otherwise.
pub fn scan(text: &str) -> Vec<Found> {
    let (has_at, digits) = census(text.as_bytes());
    let mut found = Vec::new();
    if !has_at && digits < 10 {
        return found;
    }
    if has_at {
        emails(text, &mut found);
    }
    if digits >= 10 {
        // A card number written in groups is also shaped like a phone number: cards first.
        let before = found.len();
        cards(text, &mut found);
        if found.len() == before {
            if let Some(range) = phone(text) {
                found.push(Found {
                    kind: Kind::Phone,
                    range,
                });
            }
        }
    }
    found.sort_by_key(|f| f.range.start);
    // An e-mail whose local part is a card number is one finding, not two.
    let mut end = 0;
    found.retain(|f| {
        let keep = f.range.start >= end;
        if keep {
            end = f.range.end;
        }
        keep
    });
    found
}

/// Whether `bytes` holds an `@`, and how many ASCII digits: what tells [`scan`] that a string
/// can hold no finding (no `@`, fewer than 10 digits), in one pass of eight bytes at a time
/// instead of two passes byte by byte (the detector's share of the request path,
/// BENCHMARKS.md "Issue 34, ninth session"). The same answer as counting byte by byte (a test
/// compares them).
fn census(bytes: &[u8]) -> (bool, usize) {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut has_at = false;
    let mut digits = 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut lanes = [0; 8];
        lanes.copy_from_slice(word);
        let word = u64::from_ne_bytes(lanes);
        // A lane is `@` when it is zero in `at`; "some lane is zero" is exact.
        let at = word ^ (ONES * u64::from(b'@'));
        has_at |= at.wrapping_sub(ONES) & !at & HIGH != 0;
        // A digit's lane is 0..=9 in `offset`, its high bit clear: adding 0x76 to the low seven
        // bits sets the high bit of every lane of 10 or more, without a carry into the next.
        let offset = word ^ (ONES * u64::from(b'0'));
        let ten_or_more = (offset & !HIGH) + ONES * 0x76;
        let is_digit = !(ten_or_more | offset) & HIGH;
        // One bit per digit lane, summed into the top lane by the multiplication.
        digits += ((is_digit >> 7).wrapping_mul(ONES) >> 56) as usize;
    }
    for &byte in words.remainder() {
        has_at |= byte == b'@';
        digits += usize::from(byte.is_ascii_digit());
    }
    (has_at, digits)
}

/// `text` with each finding masked as the `mask` rule of a schema would (see
/// [`super::rules::mask`]): an e-mail keeps its domain, a number its last four digits.
pub fn mask(text: &str, found: &[Found]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for finding in found {
        out.push_str(&text[at..finding.range.start]);
        let part = &text[finding.range.clone()];
        match finding.kind {
            Kind::Email => {
                let domain = part.rsplit_once('@').map_or("", |(_, domain)| domain);
                out.push_str("***@");
                out.push_str(domain);
            }
            Kind::Card | Kind::Phone => {
                out.push_str(&super::rules::mask_digits(part).unwrap_or_else(|| "***".to_owned()))
            }
        }
        at = finding.range.end;
    }
    out.push_str(&text[at..]);
    out
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

fn emails(text: &str, found: &mut Vec<Found>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    for (at, _) in text.match_indices('@') {
        let mut start = at;
        while start > from && is_local(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && is_domain(bytes[end]) {
            end += 1;
        }
        // A sentence may end right after the address.
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &text[at + 1..end];
        let labels: Vec<&str> = domain.split('.').collect();
        let tld_ok = labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
        if start < at && labels.len() >= 2 && labels.iter().all(|l| !l.is_empty()) && tld_ok {
            found.push(Found {
                kind: Kind::Email,
                range: start..end,
            });
            from = end;
        }
    }
}

/// The whole string, if it is a phone number.
fn phone(text: &str) -> Option<Range<usize>> {
    let trimmed = text.trim();
    let start = text.len() - text.trim_start().len();
    let (plus, rest) = match trimmed.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let mut digits = 0;
    let mut separators = 0;
    for b in rest.bytes() {
        match b {
            b'0'..=b'9' => digits += 1,
            b' ' | b'-' | b'(' | b')' => separators += 1,
            _ => return None,
        }
    }
    ((10..=15).contains(&digits)
        && (plus || separators > 0)
        && rest.starts_with(|c: char| c.is_ascii_digit() || c == '('))
    .then(|| start..start + trimmed.len())
}

fn cards(text: &str, found: &mut Vec<Found>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && touches(bytes[i - 1])) {
            i += 1;
            continue;
        }
        // The longest stretch of digits and single separators from here.
        let start = i;
        let mut end = i;
        let mut groups = Vec::new();
        let mut group = 0;
        let mut separator = None;
        while end < bytes.len() {
            let b = bytes[end];
            if b.is_ascii_digit() {
                group += 1;
                end += 1;
            } else if matches!(b, b' ' | b'-')
                && separator.is_none_or(|s| s == b)
                && end + 1 < bytes.len()
                && bytes[end + 1].is_ascii_digit()
                && group > 0
            {
                separator = Some(b);
                groups.push(group);
                group = 0;
                end += 1;
            } else {
                break;
            }
        }
        groups.push(group);
        let after_ok = end == bytes.len() || !touches(bytes[end]);
        if after_ok && card_groups(&groups) && issuer(&bytes[start..]) && luhn(&bytes[start..end]) {
            found.push(Found {
                kind: Kind::Card,
                range: start..end,
            });
        }
        i = end.max(i + 1);
    }
}

/// A neighbour that makes a run of digits part of a larger token (a hex id, a UUID).
fn touches(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn card_groups(groups: &[usize]) -> bool {
    let total: usize = groups.iter().sum();
    match groups {
        [one] => (13..=19).contains(one),
        [4, 6, 5] | [4, 6, 4] => true,
        _ => {
            (13..=19).contains(&total)
                && groups[..groups.len() - 1].iter().all(|g| *g == 4)
                && (1..=4).contains(groups.last().unwrap_or(&0))
        }
    }
}

/// Whether a number starts as a payment card's does (its issuer identification number): 3
/// (American Express, Diners, JCB), 4 (Visa), 5 (Mastercard), 6 (Discover, UnionPay) or
/// 2221–2720 (Mastercard's 2-series). Timestamps in milliseconds or microseconds start with 1
/// (until 2033) and so are not cards, whatever Luhn says.
fn issuer(bytes: &[u8]) -> bool {
    match bytes.first() {
        Some(b'3'..=b'6') => true,
        Some(b'2') => bytes
            .get(..4)
            .and_then(|four| std::str::from_utf8(four).ok()?.parse::<u16>().ok())
            .is_some_and(|prefix| (2221..=2720).contains(&prefix)),
        _ => false,
    }
}

/// The Luhn check over the digits of `bytes`.
pub fn luhn(bytes: &[u8]) -> bool {
    let mut sum = 0;
    let mut double = false;
    for b in bytes.iter().rev().filter(|b| b.is_ascii_digit()) {
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        scan(text)
            .into_iter()
            .map(|f| (f.kind, &text[f.range]))
            .collect()
    }

    #[test]
    fn finds_emails_cards_and_phones() {
        assert_eq!(
            kinds("jane.doe@example.com"),
            [(Kind::Email, "jane.doe@example.com")]
        );
        assert_eq!(
            kinds("write to jane+x@mail.example.co.uk."),
            [(Kind::Email, "jane+x@mail.example.co.uk")]
        );
        assert_eq!(
            kinds("4111111111111111"),
            [(Kind::Card, "4111111111111111")]
        );
        assert_eq!(
            kinds("card: 4111 1111 1111 1111, thanks"),
            [(Kind::Card, "4111 1111 1111 1111")]
        );
        assert_eq!(
            kinds("3782-822463-10005"),
            [(Kind::Card, "3782-822463-10005")]
        );
        assert_eq!(
            kinds("+44 20 7946 0958"),
            [(Kind::Phone, "+44 20 7946 0958")]
        );
        assert_eq!(kinds("(555) 123-4567"), [(Kind::Phone, "(555) 123-4567")]);
    }

    #[test]
    fn leaves_ids_times_and_addresses_alone() {
        for text in [
            "e2085be5-9137-4e4e-80b5-f1ffddc25423",
            "12345678-1234-1234-1234-123456789012",
            "01941f29-7c00-7000-8000-411111111111",
            "4111111111111112",
            "1733550000000",
            "1733550000000000",
            "2026-12-07",
            "2026-12-07T05:15:50.123456Z",
            "192.168.100.200",
            "@handle",
            "a@b",
            "user@localhost",
            "deadbeef4111111111111111cafe",
            "/path?id=4111111111111111x",
        ] {
            assert_eq!(kinds(text), [], "{text}");
        }
    }

    #[test]
    fn masks_keep_the_domain_and_last_four_digits() {
        let text = "from jane@example.com, card 4111 1111 1111 1111";
        assert_eq!(
            mask(text, &scan(text)),
            "from ***@example.com, card **** **** **** 1111"
        );
        let phone = "+44 20 7946 0958";
        assert_eq!(mask(phone, &scan(phone)), "+** ** **** 0958");
    }

    /// The word-at-a-time census gives what counting byte by byte gives, whatever the bytes
    /// and wherever they sit in the words: every `@` and digit position and neighbour of
    /// both (`?`, `:`, `/`, `A`, 0x80, 0xFF, 0x00, 0x7F), every length up to 40, and strings
    /// of the request path's kinds.
    #[test]
    fn the_census_counts_what_a_byte_loop_counts() {
        fn by_byte(bytes: &[u8]) -> (bool, usize) {
            let has_at = bytes.contains(&b'@');
            (has_at, bytes.iter().filter(|b| b.is_ascii_digit()).count())
        }
        let odd = [
            b'@', b'0', b'9', b'/', b':', b'?', b'A', b'`', 0x00, 0x7F, 0x80, 0xB0, 0xB9, 0xC0,
            0xFF, b' ',
        ];
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for len in 0..=40 {
            for at in 0..len {
                for byte in odd {
                    let mut text = vec![b'x'; len];
                    text[at] = byte;
                    inputs.push(text.clone());
                    text.fill(b'5');
                    text[at] = byte;
                    inputs.push(text);
                }
            }
        }
        // Every pair of the odd bytes side by side, across a word boundary too.
        for a in odd {
            for b in odd {
                for at in 5..9 {
                    let mut text = vec![b'1'; 17];
                    text[at] = a;
                    text[at + 1] = b;
                    inputs.push(text);
                }
            }
        }
        // A pseudo-random walk over every byte value.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..200 {
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            inputs.push(text);
        }
        for text in [
            "jane.doe@example.com",
            "4111 1111 1111 1111",
            "+44 20 7946 0958",
            "/pricing?utm_source=news&page=2",
            "e2085be5-9137-4e4e-80b5-f1ffddc25423",
            "2026-12-07T05:15:50.123456Z",
            "café 12 €",
        ] {
            inputs.push(text.as_bytes().to_vec());
        }
        for text in &inputs {
            assert_eq!(census(text), by_byte(text), "{text:?}");
        }
    }

    #[test]
    fn luhn_is_the_luhn_check() {
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"79927398710"));
    }
}
