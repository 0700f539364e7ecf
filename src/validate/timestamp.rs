//! The two timestamp forms the API accepts.

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};

/// RFC 3339 with an offset, or the naive `YYYY-MM-DD HH:MM:SS[.ffffff]` taken as UTC (the form
/// the first clients of The Eye send). Precision beyond microseconds is dropped, since
/// ClickHouse stores microseconds; times outside ClickHouse's `DateTime64` range (years 1900
/// to 2299) are refused, as it would store them wrongly.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").map(|naive| naive.and_utc())
        })
        .ok()?;
    let micros = parsed.timestamp_micros();
    DateTime::from_timestamp_micros(micros).filter(in_range)
}

/// Within what `DateTime64(6, 'UTC')` stores.
pub fn in_range(time: &DateTime<Utc>) -> bool {
    (1900..=2299).contains(&time.year())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
