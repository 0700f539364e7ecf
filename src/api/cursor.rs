//! The opaque `cursor` of paginated listings.
//!
//! A cursor says where the previous page ended: the last row's key (time and id), the
//! listing's order, and a fingerprint of the listing and its filters, so that a cursor is
//! refused when it is used with other filters than the ones that produced it. It is encoded as
//! URL-safe base64 of a fixed 50-byte layout ending in a checksum:
//!
//! ```text
//! version (1) | listing (1) | order (1) | time, µs since 1970 (8, big-endian)
//! | id (16) | fingerprint (8) | sha256 of everything before, first 15 bytes (15)
//! ```
//!
//! The cursor is not a capability: filters always come from the query string, and the
//! position only moves the start of a listing the caller may read in full anyway. The checksum
//! makes a garbled, truncated or hand-edited cursor fail with `invalid_cursor` instead of
//! silently starting somewhere else.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::DateTime;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::{After, Order};

const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 1 + 1 + 1 + 8 + 16 + 8;
const CHECKSUM_LEN: usize = 15;
const LEN: usize = PAYLOAD_LEN + CHECKSUM_LEN;

/// The listing a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Events = 1,
    SessionEvents = 2,
    Errors = 3,
    Sessions = 4,
}

/// Where the next page starts, bound to one listing with one set of filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub listing: Listing,
    pub order: Order,
    pub after: After,
    /// [`fingerprint`] of the filters.
    pub fingerprint: [u8; 8],
}

/// Why a cursor was refused; the message is for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CursorError(pub &'static str);

/// A stable fingerprint of a listing's filters (any value with a deterministic `Debug`).
pub fn fingerprint(filters: &impl std::fmt::Debug) -> [u8; 8] {
    let digest = Sha256::digest(format!("{filters:?}").as_bytes());
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn checksum(payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::new()
        .chain_update(b"the-eye cursor")
        .chain_update(payload)
        .finalize();
    let mut out = [0; CHECKSUM_LEN];
    out.copy_from_slice(&digest[..CHECKSUM_LEN]);
    out
}

/// The text of a cursor around any 35-byte `payload`, with a valid checksum, so that the fuzz
/// target `read_params` reaches what [`Cursor::decode`] does after the checksum. Only built
/// under `cargo fuzz` (`--cfg fuzzing`).
#[cfg(fuzzing)]
pub fn seal_for_fuzzing(payload: &[u8]) -> String {
    let mut bytes = payload.to_vec();
    bytes.extend_from_slice(&checksum(payload));
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(LEN);
        bytes.push(VERSION);
        bytes.push(self.listing as u8);
        bytes.push(match self.order {
            Order::Asc => 0,
            Order::Desc => 1,
        });
        bytes.extend_from_slice(&self.after.at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(self.after.id.as_bytes());
        bytes.extend_from_slice(&self.fingerprint);
        let sum = checksum(&bytes);
        bytes.extend_from_slice(&sum);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a cursor and checks that it belongs to `listing` with these `order` and filters.
    pub fn decode(
        text: &str,
        listing: Listing,
        order: Order,
        fingerprint: [u8; 8],
    ) -> Result<After, CursorError> {
        let garbled = CursorError("the cursor is not one this API produced (garbled or edited); pass next_cursor exactly as received");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| garbled.clone())?;
        if bytes.len() != LEN {
            return Err(garbled);
        }
        let (payload, sum) = bytes.split_at(PAYLOAD_LEN);
        if checksum(payload) != sum {
            return Err(garbled);
        }
        if payload[0] != VERSION {
            return Err(CursorError(
                "the cursor comes from another version of this API; start from the first page",
            ));
        }
        if payload[1] != listing as u8 {
            return Err(CursorError("the cursor belongs to another listing"));
        }
        let cursor_order = match payload[2] {
            0 => Order::Asc,
            1 => Order::Desc,
            _ => return Err(garbled),
        };
        if cursor_order != order {
            return Err(CursorError(
                "the cursor was made for the other `order`; keep the order of the first page",
            ));
        }
        if payload[27..35] != fingerprint {
            return Err(CursorError(
                "the cursor was made for other filters; repeat the first page's filters with it",
            ));
        }
        let micros = i64::from_be_bytes(payload[3..11].try_into().expect("8 bytes"));
        let at = DateTime::from_timestamp_micros(micros).ok_or(garbled.clone())?;
        // The checksum is not a secret: a hand-made cursor can carry any time, and one outside
        // what ClickHouse compares would fail the query (a 500) rather than the cursor.
        if !crate::validate::timestamp::in_range(&at) {
            return Err(garbled);
        }
        let id = Uuid::from_slice(&payload[11..27]).expect("16 bytes");
        Ok(After { at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        Cursor {
            listing: Listing::Events,
            order: Order::Asc,
            after: After {
                at: DateTime::from_timestamp_micros(1_609_492_527_243_860).unwrap(),
                id: Uuid::parse_str("0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d").unwrap(),
            },
            fingerprint: fingerprint(&("events", Some("page interaction"))),
        }
    }

    #[test]
    fn round_trips() {
        let cursor = cursor();
        let text = cursor.encode();
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            Cursor::decode(&text, Listing::Events, Order::Asc, cursor.fingerprint),
            Ok(cursor.after)
        );
    }

    /// A cursor forged with a valid checksum and a time ClickHouse cannot compare (issue 28).
    #[test]
    fn refuses_forged_times_outside_clickhouse_range() {
        for micros in [i64::MAX / 2, -2_300_000_000_000_000, 10_413_792_000_000_000] {
            let mut forged = cursor();
            forged.after.at = DateTime::from_timestamp_micros(micros).unwrap();
            let text = forged.encode();
            assert!(
                Cursor::decode(&text, Listing::Events, Order::Asc, forged.fingerprint).is_err(),
                "{micros}"
            );
        }
    }

    #[test]
    fn refuses_garbled_edited_and_foreign_cursors() {
        let cursor = cursor();
        let text = cursor.encode();
        let decode = |text: &str| {
            Cursor::decode(text, Listing::Events, Order::Asc, cursor.fingerprint).is_err()
        };
        assert!(decode("not a cursor"));
        assert!(decode(""));
        assert!(decode(&text[..text.len() - 2]));
        // Every single-character edit is caught.
        for position in 0..text.len() {
            let mut edited = text.clone().into_bytes();
            edited[position] = if edited[position] == b'A' { b'B' } else { b'A' };
            assert!(
                decode(&String::from_utf8(edited).unwrap()),
                "edit at {position}"
            );
        }
        assert!(
            Cursor::decode(&text, Listing::Errors, Order::Asc, cursor.fingerprint).is_err(),
            "another listing"
        );
        assert!(
            Cursor::decode(&text, Listing::Events, Order::Desc, cursor.fingerprint).is_err(),
            "another order"
        );
        assert!(
            Cursor::decode(&text, Listing::Events, Order::Asc, fingerprint(&"other")).is_err(),
            "other filters"
        );
    }
}
