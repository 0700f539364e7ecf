//! API keys: `eye_<id>_<secret>`, where `eye_<id>` is the public prefix that names the key in
//! logs and lists, and the secret is 256 random bits. Only a SHA-256 of the whole key is
//! stored: a key is random and long, so a fast hash is as safe as a slow one here, and it
//! keeps authentication cheap.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

// The key's shape as text is `redact`'s, which sees keys wherever text leaves the service.
/// Redaction lives in the neutral [`crate::redact`] (telemetry uses it too); re-exported here,
/// where callers have always found it.
pub use crate::redact::{redact, redact_in_place};
use crate::redact::{ID_LEN, PREFIX_MARK, SECRET_LEN};

const SECRET_BYTES: usize = 32;
const ID_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Which bytes may stand in a key's id and which in its secret, one table look-up per byte.
/// [`prefix_of`] runs on every authenticated request: searching the alphabet for each byte
/// of the id and testing classes for each byte of the secret cost ~1,600 instructions a
/// request (BENCHMARKS.md, "Issue 34, ninth session").
const KEY_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < ID_ALPHABET.len() {
        table[ID_ALPHABET[i] as usize] |= IN_ID;
        i += 1;
    }
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            table[byte] |= IN_SECRET;
        }
        byte += 1;
    }
    table
};
const IN_ID: u8 = 1;
const IN_SECRET: u8 = 2;

/// Whether every byte of `text` has `class` in [`KEY_BYTES`].
fn all_in(text: &str, class: u8) -> bool {
    text.bytes()
        .all(|byte| KEY_BYTES[usize::from(byte)] & class != 0)
}

/// A freshly generated key. `key` is shown once and never stored; `Debug` shows only the
/// prefix, so that no log line can carry the key by accident.
pub struct NewKey {
    pub prefix: String,
    pub key: String,
    pub hash: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Generates a key from the operating system's cryptographic generator (via `rand`'s
/// thread-local CSPRNG, seeded from the OS).
pub fn generate() -> NewKey {
    let mut rng = rand::rng();
    let id: String = (0..ID_LEN)
        .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
        .collect();
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut secret);
    let prefix = format!("{PREFIX_MARK}{id}");
    let key = format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&key);
    NewKey { prefix, key, hash }
}

/// The public prefix of a well-formed key; `None` for anything else, before any lookup.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX_MARK)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == ID_LEN
        && all_in(id, IN_ID)
        && secret.len() == SECRET_LEN
        && all_in(secret, IN_SECRET);
    well_formed.then(|| &key[..PREFIX_MARK.len() + ID_LEN])
}

/// SHA-256 of the key, lowercase hex. Runs on every authenticated request, so it writes the
/// digits straight into one string rather than formatting (and allocating) each byte.
pub fn hash(key: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// Compares in time independent of where the inputs differ.
pub fn hashes_match(expected: &str, actual: &str) -> bool {
    expected.len() == actual.len()
        && expected
            .bytes()
            .zip(actual.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let first = generate();
        let second = generate();
        assert_ne!(first.key, second.key);
        assert_eq!(prefix_of(&first.key), Some(first.prefix.as_str()));
        assert!(first.key.starts_with("eye_"));
        assert_eq!(first.hash, hash(&first.key));
        assert!(!first.hash.contains(&first.key[first.prefix.len() + 1..]));
        assert!(hashes_match(&first.hash, &hash(&first.key)));
        assert!(!hashes_match(&first.hash, &second.hash));
    }

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        // Stored hashes must keep matching: the known SHA-256 of "abc".
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_are_redacted_to_their_prefix_wherever_they_stand() {
        let key = generate();
        let redacted = format!("{}…", key.prefix);
        assert_eq!(redact(&key.key), redacted);
        for (text, expected) in [
            (format!("Bearer {}", key.key), format!("Bearer {redacted}")),
            (
                format!("{{\"{}\":1,\"data\":\"x{}y\"}}", key.key, key.key),
                format!("{{\"{redacted}\":1,\"data\":\"x{redacted}\"}}"),
            ),
            // A longer run of key characters is redacted whole.
            (format!("{}extra-chars", key.key), redacted.clone()),
            (format!("é{}é", key.key), format!("é{redacted}é")),
        ] {
            assert_eq!(redact(&text), expected);
        }
        // Not keys: too short, wrong shape, nothing at all.
        for text in [
            "eye_",
            "eye_abcdefgh_short",
            "eye_ABCDEFGH_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "the eye_ sees eye_eye_",
            "",
            &key.key[..key.key.len() - 1],
        ] {
            assert!(
                matches!(redact(text), std::borrow::Cow::Borrowed(_)),
                "{text}"
            );
        }
        let mut owned = format!("k={}", key.key);
        redact_in_place(&mut owned);
        assert_eq!(owned, format!("k={redacted}"));
    }

    /// A key spelled with JSON escapes or percent-encoding, in any of its characters, is
    /// redacted whole (issue 28, item 8).
    #[test]
    fn encoded_keys_are_redacted_too() {
        let key = generate();
        let secret = &key.key[key.prefix.len() + 1..];
        let id = &key.prefix[4..];
        let redacted = format!("{}…", key.prefix);
        let json_all: String = key
            .key
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        let percent_all: String = key
            .key
            .chars()
            .map(|c| format!("%{:02X}", c as u32))
            .collect();
        for spelled in [
            format!("\\u0065ye_{id}_{secret}"),
            format!("eye_{id}%5F{secret}"),
            format!("eye_{id}%5f{secret}"),
            format!("\\u0065ye%5f{id}\\u005F{secret}"),
            json_all,
            percent_all,
        ] {
            for (text, expected) in [
                (spelled.clone(), redacted.clone()),
                (
                    format!("{{\"k\": \"{spelled}\", \"x\": \"é%\\\\\"}}"),
                    format!("{{\"k\": \"{redacted}\", \"x\": \"é%\\\\\"}}"),
                ),
                (
                    format!("?key={spelled}&a=%20"),
                    format!("?key={redacted}&a=%20"),
                ),
            ] {
                assert_eq!(redact(&text), expected, "{text}");
                assert!(!redact(&text).contains(&secret[..20]), "{text}");
            }
        }
        // Escapes that are not a key stay as they are, borrowed.
        for text in [
            "100% sure \\u0065ye_ nothing",
            "%",
            "\\",
            "\\u00",
            "eye_abcdefgh%5Fshort",
            "\\u0065ye_abcdefgh_%zz",
        ] {
            assert!(
                matches!(redact(text), std::borrow::Cow::Borrowed(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        let key = generate().key;
        for bad in [
            "",
            "eye_",
            "Bearer x",
            &key[..key.len() - 1],
            &key.replace("eye_", "eya_"),
            &format!("{key}x"),
            "eye_abcdefgh_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
    }

    /// The byte table says what the alphabet and the secret's classes say, for every byte,
    /// and a key with any one byte of its id or secret replaced is refused exactly when the
    /// replacement is outside that part's class.
    #[test]
    fn the_byte_table_is_the_key_alphabet() {
        for byte in 0..=255u8 {
            let in_secret = byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
            assert_eq!(
                all_in(&char::from(byte).to_string(), IN_ID),
                ID_ALPHABET.contains(&byte) && byte.is_ascii(),
                "{byte}"
            );
            if byte.is_ascii() {
                assert_eq!(
                    all_in(&char::from(byte).to_string(), IN_SECRET),
                    in_secret,
                    "{byte}"
                );
            }
        }
        let key = generate().key;
        let id = PREFIX_MARK.len()..PREFIX_MARK.len() + ID_LEN;
        let secret = PREFIX_MARK.len() + ID_LEN + 1..key.len();
        for position in id.clone().chain(secret) {
            for byte in 0x20..0x7fu8 {
                let mut bytes = key.clone().into_bytes();
                bytes[position] = byte;
                let changed = String::from_utf8(bytes).unwrap();
                let allowed = if id.contains(&position) {
                    ID_ALPHABET.contains(&byte)
                } else {
                    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
                };
                assert_eq!(prefix_of(&changed).is_some(), allowed, "{changed}");
            }
        }
    }
}
