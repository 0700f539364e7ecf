//! The read API's query strings and cursors: `GET /api/events`, `/api/sessions/{id}/events`
//! and `/api/errors` parse any query string into a listing (or a 400) and build their
//! ClickHouse query from it; a cursor is decoded whatever its text. A second half drives
//! [`Cursor::decode`] past its checksum with payloads sealed for fuzzing, so that what follows
//! the checksum (time and id) is reached too.
//!
//! The first byte picks the route (bits 0–1) and whether the rest is a sealed cursor payload
//! (bit 2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use the_eye::api::cursor::{seal_for_fuzzing, Cursor, Listing};
use the_eye::api::read::{parse_error_listing, parse_event_listing};
use the_eye::store::Order;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode & 4 == 4 {
        if rest.len() < 35 {
            return;
        }
        let payload = &rest[..35];
        let listing = match payload[1] % 3 {
            0 => Listing::Events,
            1 => Listing::SessionEvents,
            _ => Listing::Errors,
        };
        let order = if payload[2] % 2 == 0 {
            Order::Asc
        } else {
            Order::Desc
        };
        let fingerprint: [u8; 8] = payload[27..35].try_into().unwrap();
        let text = seal_for_fuzzing(payload);
        if let Ok(after) = Cursor::decode(&text, listing, order, fingerprint) {
            // Whatever decodes encodes back to the same text.
            let again = Cursor {
                listing,
                order,
                after,
                fingerprint,
            }
            .encode();
            assert_eq!(again, text);
        }
        return;
    }
    let query = String::from_utf8_lossy(rest);
    let query = (!query.is_empty()).then_some(query.as_ref());
    match mode & 3 {
        0 => {
            if let Ok(listing) = parse_event_listing(None, query) {
                let _ = listing.query();
            }
        }
        1 => {
            if let Ok(listing) = parse_event_listing(Some("session".to_owned()), query) {
                let _ = listing.query();
            }
        }
        _ => {
            if let Ok(listing) = parse_error_listing(query) {
                let _ = listing.query();
            }
        }
    }
});
