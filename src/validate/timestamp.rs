//! The two timestamp forms the API accepts.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};

/// RFC 3339 with an offset, or the naive `YYYY-MM-DD HH:MM:SS[.ffffff]` taken as UTC (the form
/// the first clients of The Eye send). Precision beyond microseconds is dropped, since
/// ClickHouse stores microseconds; times outside ClickHouse's `DateTime64` range (years 1900
/// to 2299) are refused, as it would store them wrongly.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    // The naive form first: it is what most clients send, and a text it reads has no
    // offset, so RFC 3339 (which requires one) could not have read it (a test checks this);
    // trying RFC 3339 first cost a near-complete parse per naive time.
    let parsed = naive_fast(text)
        .or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .map(|time| time.with_timezone(&Utc))
                .ok()
        })
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|naive| naive.and_utc())
        })?;
    let micros = parsed.timestamp_micros();
    DateTime::from_timestamp_micros(micros).filter(in_range)
}

/// The naive form in its usual shape — `YYYY-MM-DD HH:MM:SS` and at most nine fraction
/// digits, every field at its fixed width — read without chrono's format-string parser, which
/// interprets `%Y-%m-%d …` afresh for every event (~2,000 instructions, BENCHMARKS.md "Profile
/// of the single-event path"). Anything else (other widths, a leap second) is `None` and left
/// to that parser, so both agree on every input (a test compares them).
fn naive_fast(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    if bytes.len() < 19 || bytes.len() == 20 || bytes.len() > 29 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        bytes[range].iter().try_fold(0u32, |value, &byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b' '), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, byte)| bytes[at] != byte) {
        return None;
    }
    let second = digits(17..19)?;
    if second > 59 {
        return None;
    }
    let nanos = if bytes.len() > 19 {
        if bytes[19] != b'.' {
            return None;
        }
        let fraction = &bytes[20..];
        digits(20..bytes.len())? * 10u32.pow(9 - fraction.len() as u32)
    } else {
        0
    };
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(digits(0..4)?).ok()?,
        digits(5..7)?,
        digits(8..10)?,
    )?;
    Some(
        date.and_hms_nano_opt(digits(11..13)?, digits(14..16)?, second, nanos)?
            .and_utc(),
    )
}

/// Within what `DateTime64(6, 'UTC')` stores: 1900-01-01 to 2299-12-31 (ClickHouse's
/// documented range; outside it ClickHouse stores or compares a wrong time, or refuses the
/// query). Every time the API takes — events, query parameters, cursors, replay bodies — is
/// checked with this one function.
pub fn in_range(time: &DateTime<Utc>) -> bool {
    (1900..=2299).contains(&time.year())
}

/// The earliest time `DateTime64(6, 'UTC')` holds: 1900-01-01T00:00:00Z.
pub fn earliest() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1900, 1, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .expect("a valid date")
        .and_utc()
}

/// The latest time `DateTime64(6, 'UTC')` holds: 2299-12-31T23:59:59.999999Z.
pub fn latest() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2299, 12, 31)
        .and_then(|date| date.and_hms_micro_opt(23, 59, 59, 999_999))
        .expect("a valid date")
        .and_utc()
}

/// `time + delta`, held within [`earliest`]..=[`latest`]: the window arithmetic of listings
/// (a start near an edge plus or minus some days) never leaves what ClickHouse can compare,
/// and never overflows chrono's own range.
pub fn saturating_add(time: DateTime<Utc>, delta: chrono::TimeDelta) -> DateTime<Utc> {
    let moved = time
        .checked_add_signed(delta)
        .unwrap_or(if delta < chrono::TimeDelta::zero() {
            earliest()
        } else {
            latest()
        });
    moved.clamp(earliest(), latest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_arithmetic_saturates_at_clickhouse_edges() {
        let days = chrono::TimeDelta::days;
        assert_eq!(saturating_add(latest() - days(1), days(30)), latest());
        assert_eq!(saturating_add(earliest() + days(1), -days(30)), earliest());
        assert_eq!(saturating_add(DateTime::<Utc>::MAX_UTC, days(1)), latest());
        assert_eq!(
            saturating_add(DateTime::<Utc>::MIN_UTC, -days(1)),
            earliest()
        );
        let inside = parse("2021-01-01T00:00:00Z").unwrap();
        assert_eq!(saturating_add(inside, days(1)), inside + days(1));
        assert!(in_range(&earliest()) && in_range(&latest()));
        assert!(!in_range(
            &(earliest() - chrono::TimeDelta::microseconds(1))
        ));
        assert!(!in_range(&(latest() + chrono::TimeDelta::microseconds(1))));
    }

    #[test]
    fn accepts_both_forms_and_refuses_others() {
        let naive = parse("2021-01-01 09:15:27.243860").unwrap();
        assert_eq!(naive.to_rfc3339(), "2021-01-01T09:15:27.243860+00:00");
        let offset = parse("2021-01-01T10:15:27.243860+01:00").unwrap();
        assert_eq!(offset, naive);
        assert_eq!(
            parse("2021-01-01 09:15:27")
                .unwrap()
                .timestamp_subsec_micros(),
            0
        );
        assert_eq!(
            parse("2021-01-01T09:15:27.243860999Z").unwrap(),
            naive,
            "nanoseconds are truncated to microseconds"
        );
        for bad in [
            "+262142-12-31 00:00:00",
            "1899-12-31 23:59:59",
            "2300-01-01T00:00:00Z",
            "",
            "yesterday",
            "2021-01-01",
            "2021-13-01 00:00:00",
            "2021-01-01T09:15:27",
            "1609492527",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    /// The fast reader of the naive form must agree with chrono's format-string parser on
    /// every input it takes, and take the usual ones.
    #[test]
    fn the_fast_naive_reader_agrees_with_chrono() {
        let chrono = |text: &str| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|naive| naive.and_utc())
        };
        let mut inputs = vec![
            "2021-01-01 09:15:27".to_owned(),
            "2021-01-01 09:15:27.2".to_owned(),
            "2021-01-01 09:15:27.243860".to_owned(),
            "2021-01-01 09:15:27.243860999".to_owned(),
            "2024-02-29 23:59:59.999999".to_owned(),
            "2023-02-29 00:00:00".to_owned(),
            "2021-01-01 24:00:00".to_owned(),
            "2021-01-01 09:60:00".to_owned(),
            "2021-01-01 09:15:60".to_owned(),
            "2021-01-01 09:15:27.".to_owned(),
            "2021-01-01 09:15:27.1234567890".to_owned(),
            "2021-01-01T09:15:27".to_owned(),
            "2021-1-01 09:15:27".to_owned(),
            "2021-01-01 9:15:27".to_owned(),
            "+2021-01-01 09:15:27".to_owned(),
            "2021-01-01 09:15:27 ".to_owned(),
            "2021-01-01 09:15:2a".to_owned(),
            "0000-01-01 00:00:00".to_owned(),
            "2021-00-10 00:00:00".to_owned(),
            "2021-01-01 09:15:27,5".to_owned(),
        ];
        // Every field of a valid time replaced by each of a few odd bytes, one at a time.
        let base = "2021-06-30 12:34:56.789012";
        for at in 0..base.len() {
            for byte in ['0', '9', '-', ':', ' ', '.', 'x'] {
                let mut text = base.to_owned().into_bytes();
                text[at] = byte as u8;
                inputs.push(String::from_utf8(text).unwrap());
            }
        }
        for text in &inputs {
            if let Some(fast) = naive_fast(text) {
                assert_eq!(Some(fast), chrono(text), "{text:?}");
                // `parse` tries the fast reader first: RFC 3339 must not read these.
                assert!(DateTime::parse_from_rfc3339(text).is_err(), "{text:?}");
            }
        }
        for usual in &inputs[..5] {
            assert!(naive_fast(usual).is_some(), "{usual:?}");
        }
    }
}
