//! Redaction of API keys from text that leaves the service: answers, log lines, the
//! `errors` table. Neutral ground: it imports nothing of the crate, so that `telemetry` (every
//! log line) and `auth` (which makes keys in this shape) both use it without importing each
//! other. The shape of a key as text (`eye_<id>_<secret>`) is defined here for that reason.

/// Every key starts with this.
pub(crate) const PREFIX_MARK: &str = "eye_";
/// Characters of the key's public id (after [`PREFIX_MARK`]).
pub(crate) const ID_LEN: usize = 8;
/// Characters of the secret: base64 (URL-safe, unpadded) of 32 bytes.
pub(crate) const SECRET_LEN: usize = 43;

/// Replaces everything shaped like a key of this service (`eye_`, 8 lowercase letters or
/// digits, `_`, 43 or more base64url characters) with its public prefix and `…`, e.g.
/// `eye_k3m9x2pq…`. The one redaction applied wherever client input leaves the service: in
/// answers, in log lines and in the `errors` table. Borrows when there is nothing to redact,
/// which is nearly always.
///
/// Redaction matches what the text means, not only how it is spelled: a key written with JSON
/// escapes (`\u0065ye_…`, as a malformed JSON body may hold it) or percent-encoding
/// (`eye_k3m9x2pq%5F…`, as in a query string) is a key too, and is redacted whole, escapes
/// included (issue 28). Each character of a key may be written either way or plainly.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\\', '%']) {
        return redact_encoded(text);
    }
    let bytes = text.as_bytes();
    let secret_byte = |byte: &u8| byte.is_ascii_alphanumeric() || *byte == b'-' || *byte == b'_';
    let mut redacted = String::new();
    // `text[copied..]` is not yet in `redacted`; every index here follows an ASCII byte, so
    // each is a character boundary.
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find(PREFIX_MARK) {
        let start = from + found;
        let id_end = start + PREFIX_MARK.len() + ID_LEN;
        let is_key = bytes
            .get(start + PREFIX_MARK.len()..id_end)
            .is_some_and(|id| {
                id.iter()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
            })
            && bytes.get(id_end) == Some(&b'_');
        let secret = if is_key {
            bytes[id_end + 1..]
                .iter()
                .take_while(|b| secret_byte(b))
                .count()
        } else {
            0
        };
        if secret < SECRET_LEN {
            from = start + 1;
            continue;
        }
        redacted.push_str(&text[copied..id_end]);
        redacted.push('…');
        copied = id_end + 1 + secret;
        from = copied;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    redacted.push_str(&text[copied..]);
    std::borrow::Cow::Owned(redacted)
}

/// One ASCII character of `bytes` at `at`, decoded: written plainly, as a JSON escape
/// (`\u0065`) or percent-encoded (`%65`); its value and how many bytes it takes. `None` for
/// anything else (a non-ASCII character, a broken escape), which no key contains.
fn decoded_at(bytes: &[u8], at: usize) -> Option<(u8, usize)> {
    let hex = |digits: &[u8]| -> Option<u32> {
        digits.iter().try_fold(0u32, |value, &digit| {
            Some(value * 16 + char::from(digit).to_digit(16)?)
        })
    };
    match *bytes.get(at)? {
        b'\\' if bytes.get(at + 1) == Some(&b'u') => {
            let value = hex(bytes.get(at + 2..at + 6)?)?;
            (value < 0x80).then_some((value as u8, 6))
        }
        b'%' => {
            let value = hex(bytes.get(at + 1..at + 3)?)?;
            (value < 0x80).then_some((value as u8, 3))
        }
        byte if byte.is_ascii() => Some((byte, 1)),
        _ => None,
    }
}

/// [`redact`] for text holding `\` or `%`: the same match, on decoded characters. The prefix
/// is written back decoded (`eye_k3m9x2pq…`), as [`redact`] writes it.
fn redact_encoded(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let secret_byte = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
    let id_byte = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    let mut redacted = String::new();
    // `text[copied..]` is not yet in `redacted`. A match starts and ends on ASCII bytes (a
    // plain character or the first byte of an escape), so every index is a boundary.
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        let Some((first, _)) = decoded_at(bytes, at) else {
            at += 1;
            continue;
        };
        if first != b'e' {
            at += 1;
            continue;
        }
        // Walk the candidate one decoded character at a time.
        let mut end = at;
        let mut prefix = String::with_capacity(PREFIX_MARK.len() + ID_LEN);
        let mut matched = true;
        for position in 0..PREFIX_MARK.len() + ID_LEN + 1 {
            match decoded_at(bytes, end) {
                Some((byte, len))
                    if (position < PREFIX_MARK.len()
                        && byte == PREFIX_MARK.as_bytes()[position])
                        || (position >= PREFIX_MARK.len()
                            && position < PREFIX_MARK.len() + ID_LEN
                            && id_byte(byte))
                        || (position == PREFIX_MARK.len() + ID_LEN && byte == b'_') =>
                {
                    if position < PREFIX_MARK.len() + ID_LEN {
                        prefix.push(char::from(byte));
                    }
                    end += len;
                }
                _ => {
                    matched = false;
                    break;
                }
            }
        }
        let mut secret = 0;
        if matched {
            while let Some((byte, len)) = decoded_at(bytes, end) {
                if !secret_byte(byte) {
                    break;
                }
                secret += 1;
                end += len;
            }
        }
        if !matched || secret < SECRET_LEN {
            at += 1;
            continue;
        }
        redacted.push_str(&text[copied..at]);
        redacted.push_str(&prefix);
        redacted.push('…');
        copied = end;
        at = end;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    redacted.push_str(&text[copied..]);
    std::borrow::Cow::Owned(redacted)
}

/// [`redact`] in place, for a `String` that is about to leave the service.
pub fn redact_in_place(text: &mut String) {
    if let std::borrow::Cow::Owned(redacted) = redact(text) {
        *text = redacted;
    }
}
