//! Writing an accepted event's `data` ([`Data`]) as JSON text: byte for byte what
//! `serde_json::to_string` writes for the same object as a `Value` (compact, members in the
//! map's order, the same escapes, the same numbers), in fewer instructions.
//!
//! Every accepted event's `data` is written once, for its row; through serde's `Serializer`
//! it cost ~1,800 instructions per event of a batch (the eleventh session's profile in
//! BENCHMARKS.md), most of it `format_escaped_str` looking up each byte of every key and
//! string in an escape table. Here a string is checked eight bytes at a time for the three things JSON escapes
//! (`"`, `\` and the control characters below U+0020) and, when it holds none (nearly every
//! key and value), copied whole. A string that does need an escape, and every number, is
//! written by `serde_json` itself, so the escapes and number forms cannot drift from it; a
//! randomised test holds the whole to `serde_json::to_string`.

use super::data::{Data, Members};

/// `object` as `serde_json::to_string` writes it as a `Value`.
pub fn object_to_string(object: &Members<'_>) -> String {
    // serde_json starts from the same 128 bytes.
    let mut out = Vec::with_capacity(128);
    write_object(&mut out, object);
    // Every byte written is a `str`'s or ASCII punctuation: valid UTF-8, which this checks
    // again (std's check runs a word at a time over ASCII) rather than assume unsafely.
    String::from_utf8(out)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

fn write_object(out: &mut Vec<u8>, object: &Members<'_>) {
    out.push(b'{');
    let mut first = true;
    for (key, value) in object.iter() {
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// Recursive like serde's `Serialize` for `Value`: `data` comes from a parser that refuses
/// nesting deeper than 128 levels.
fn write_value(out: &mut Vec<u8>, value: &Data<'_>) {
    match value {
        Data::Null => out.extend_from_slice(b"null"),
        Data::Bool(true) => out.extend_from_slice(b"true"),
        Data::Bool(false) => out.extend_from_slice(b"false"),
        Data::String(text) => write_str(out, text),
        Data::Array(elements) => {
            out.push(b'[');
            for (position, element) in elements.iter().enumerate() {
                if position > 0 {
                    out.push(b',');
                }
                write_value(out, element);
            }
            out.push(b']');
        }
        Data::Object(object) => write_object(out, object),
        Data::Number(number) => write_by_serde(out, number),
    }
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    if needs_escape(text.as_bytes()) {
        write_by_serde(out, text);
        return;
    }
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// What `serde_json` writes for `value`, appended. Writing into a `Vec` cannot fail, nor can
/// serialising a string or a number.
fn write_by_serde<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

/// Whether `bytes` holds a byte JSON must escape: `"`, `\`, or one below 0x20 (RFC 8259 §7;
/// serde_json escapes exactly these). Eight bytes at a time; a test compares it with the
/// byte-wise answer.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some lane of `word` is below `n` (for n <= 0x80): exact as to whether one is, though
    // not as to which.
    let lane_below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH != 0;
    let holds_escape = |word: &[u8]| {
        let mut lanes = [0; 8];
        lanes.copy_from_slice(word);
        let word = u64::from_ne_bytes(lanes);
        lane_below(word, 0x20)
            || lane_below(word ^ (ONES * u64::from(b'"')), 1)
            || lane_below(word ^ (ONES * u64::from(b'\\')), 1)
    };
    if bytes.len() < 8 {
        return bytes.iter().copied().any(escaped);
    }
    let mut words = bytes.chunks_exact(8);
    if words.any(holds_escape) {
        return true;
    }
    // The bytes past the last whole word: the last eight bytes, overlapping it, in one test.
    !bytes.len().is_multiple_of(8) && holds_escape(&bytes[bytes.len() - 8..])
}

fn escaped(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    fn written(object: &Map<String, Value>) -> String {
        let value = Value::Object(object.clone());
        match Data::borrowed(&value) {
            Data::Object(members) => object_to_string(&members),
            _ => unreachable!(),
        }
    }

    /// A small generator, so that the test needs no dependency and fails the same way twice.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // SplitMix64.
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn text(&mut self) -> String {
            // Mostly plain text, sometimes each of the characters that are escaped, some
            // that are not (DEL, non-ASCII, `/`), at every position of a word.
            const PIECES: [&str; 14] = [
                "a",
                "page",
                "/checkout?x=1",
                "\"",
                "\\",
                "\n",
                "\t",
                "\u{1}",
                "\u{1f}",
                "\u{7f}",
                "é",
                "🦀",
                " ",
                "/",
            ];
            let len = self.below(24);
            (0..len)
                .map(|_| {
                    let plain = self.below(4) > 0;
                    if plain {
                        PIECES[self.below(3) as usize]
                    } else {
                        PIECES[self.below(PIECES.len() as u64) as usize]
                    }
                })
                .collect()
        }

        fn value(&mut self, depth: u32) -> Value {
            let kinds = if depth >= 4 { 5 } else { 7 };
            match self.below(kinds) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 => match self.below(4) {
                    0 => json!(self.next()),
                    1 => json!(-(self.below(1 << 62) as i64)),
                    2 => json!(
                        f64::from_bits(self.next() >> 2)
                            * if self.below(2) == 0 { 1.0 } else { -1.0 }
                    ),
                    _ => json!(self.below(100_000) as f64 / 100.0),
                },
                3 | 4 => Value::String(self.text()),
                5 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
                _ => Value::Object(self.object(depth + 1)),
            }
        }

        fn object(&mut self, depth: u32) -> Map<String, Value> {
            (0..self.below(6))
                .map(|_| (self.text(), self.value(depth)))
                .collect()
        }
    }

    #[test]
    fn objects_are_written_byte_for_byte_as_serde_json_writes_them() {
        let mut rng = Rng(34);
        for _ in 0..20_000 {
            let object = rng.object(0);
            assert_eq!(
                written(&object),
                serde_json::to_string(&object).unwrap(),
                "{object:?}"
            );
        }
        let edges = json!({
            "": "", "n": [0, -0, 1.0, -1.5e-300, 1e300, 18446744073709551615u64, -9223372036854775808i64],
            "s": "\u{0}\u{8}\u{c}\r\u{1f} \u{7f}\"\\/é🦀", "deep": {"a": [[[{"b": [true, false, null]}]]]}
        });
        let Value::Object(edges) = edges else {
            unreachable!()
        };
        assert_eq!(written(&edges), serde_json::to_string(&edges).unwrap());
    }

    #[test]
    fn the_word_wise_look_for_an_escape_agrees_with_a_byte_wise_one() {
        let mut rng = Rng(7);
        for _ in 0..50_000 {
            let len = rng.below(40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.below(8) {
                    // Neighbours of the bytes looked for, where a lane test could slip.
                    0 => [
                        0x1f, 0x20, b'"', b'!', b'#', b'\\', b'[', b']', 0x80, 0xff, 0x00,
                    ][rng.below(11) as usize],
                    _ => b'a' + rng.below(26) as u8,
                })
                .collect();
            assert_eq!(
                needs_escape(&bytes),
                bytes.iter().copied().any(escaped),
                "{bytes:?}"
            );
        }
    }
}
