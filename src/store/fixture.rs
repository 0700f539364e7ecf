//! A synthetic `events` fixture generated inside ClickHouse, for the read-speed test and the
//! read benchmark (`eye-read-bench`): both load exactly the same data.
//!
//! One `INSERT … SELECT … FROM numbers(n)` writes it in seconds, where sending a million
//! events through HTTP would take minutes. Event `i` happens at `start + i × span / n`, so the
//! events spread evenly over the span; sessions interleave ten at a time (events `i` with the
//! same `i / (10 × per_session)` and `i % 10` form one session, a couple of hours long at the
//! default sizes) and belong to one of three applications, and categories are spread by a
//! hash of `i`. Session ids are time-ordered UUIDv7s by default, as the browser SDK makes
//! them (the first 48 bits are the session's first event in milliseconds, so sorting by id is
//! sorting by start), or scattered `session-N` ids ([`SessionIds`]), as an application that
//! sends its own random ids gets. `errors` gets one rejection per five events, spread evenly over the 30 days before
//! the day the fixture is made (`errors` keeps rows 90 days: older ones would expire on
//! insert) and across the same three applications, so that listings of errors by time have a
//! table to prune.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::{Store, StoreError};

/// How the fixture's session ids are made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SessionIds {
    /// UUIDv7s of the session's first event (`xxxxxxxx-xxxx-7000-8000-{session number, 12 hex
    /// digits}`): they sort by session start, as the SDK's and the Rust client's do.
    #[default]
    TimeOrdered,
    /// `session-N`: they sort lexicographically (`session-3` next to `session-3000`), so the
    /// sessions active at one time are scattered over the table, as random ids are.
    Scattered,
}

/// The shape of the fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    pub events: u64,
    /// Distinct sessions; a multiple of 10 that divides `events` keeps them equal in size.
    pub sessions: u64,
    pub categories: u64,
    /// Rows of `errors` (rejections), received evenly over [`Fixture::ERROR_DAYS`] days from
    /// `errors_start`.
    pub errors: u64,
    /// When the first rejection is received: midnight UTC, [`Fixture::ERROR_DAYS`] days ago.
    pub errors_start: DateTime<Utc>,
    /// When the first event happens.
    pub start: DateTime<Utc>,
    pub days: u32,
    pub session_ids: SessionIds,
}

impl Default for Fixture {
    /// The read-speed target: 1,000,000 events, 10,000 sessions, 20 categories, 90 days, and
    /// 200,000 rejections.
    fn default() -> Self {
        Self {
            events: 1_000_000,
            sessions: 10_000,
            categories: 20,
            errors: 200_000,
            errors_start: Utc::now()
                .duration_trunc(TimeDelta::days(1))
                .expect("a day")
                - TimeDelta::days(Self::ERROR_DAYS.into()),
            start: DateTime::from_timestamp(1_735_689_600, 0).expect("2025-01-01"),
            days: 90,
            session_ids: SessionIds::default(),
        }
    }
}

impl Fixture {
    /// Days over which the rejections are received, ending at midnight UTC today.
    pub const ERROR_DAYS: u32 = 30;

    /// The default shape with `events` events: sessions of 100 events (`events` should be a
    /// multiple of 1,000 so that they come out equal), one rejection per five events, the same
    /// categories and days.
    pub fn of_size(events: u64) -> Self {
        Self {
            events,
            sessions: (events / 100).max(1),
            errors: (events / 5).max(1),
            ..Self::default()
        }
    }

    /// Microseconds between consecutive events.
    fn step_micros(&self) -> u64 {
        u64::from(self.days) * 86_400_000_000 / self.events
    }

    /// When event `i` happens.
    pub fn timestamp(&self, i: u64) -> DateTime<Utc> {
        self.start + TimeDelta::microseconds((i * self.step_micros()) as i64)
    }

    /// The same shape with session ids made as `session_ids` says.
    pub fn with_session_ids(self, session_ids: SessionIds) -> Self {
        Self {
            session_ids,
            ..self
        }
    }

    /// The session id of event `i`; the same as [`Fixture::load`] writes.
    pub fn session_of(&self, i: u64) -> String {
        let per_session = (self.events / self.sessions).max(1);
        let session = (i / (10 * per_session)) * 10 + i % 10;
        match self.session_ids {
            SessionIds::Scattered => format!("session-{session}"),
            SessionIds::TimeOrdered => {
                // The session's first event: the first of its block of ten interleaved ones.
                let first = (session / 10) * 10 * per_session + session % 10;
                let ms = self.timestamp(first).timestamp_millis() as u64;
                format!(
                    "{:08x}-{:04x}-7000-8000-{session:012x}",
                    ms >> 16,
                    ms & 0xffff
                )
            }
        }
    }

    /// The application of event `i`: a session belongs to one application, as sessions do.
    pub fn application_of(&self, i: u64) -> String {
        let per_session = self.events / self.sessions;
        format!(
            "fixture-app-{}",
            ((i / (10 * per_session)) * 10 + i % 10) % 3
        )
    }

    /// The category names are `category-0` … `category-{categories - 1}`.
    pub fn category(&self, k: u64) -> String {
        format!("category-{k}")
    }

    /// Writes the fixture into `events`.
    pub async fn load(&self, store: &Store) -> Result<(), StoreError> {
        let per_session = (self.events / self.sessions).max(1);
        // The SQL twin of `session_of`: `s` is the session's number, `first` its first event.
        let session_id = match self.session_ids {
            SessionIds::Scattered => "concat('session-', toString(s))",
            SessionIds::TimeOrdered => {
                "concat(substring(leftPad(lower(hex(intDiv(toUInt64(toUnixTimestamp64Micro( \
                 {start:DateTime64(6, 'UTC')} + toIntervalMicrosecond(first * {step:UInt64}))), \
                 1000))), 12, '0') AS ms_hex, 1, 8), '-', substring(ms_hex, 9, 4), \
                 '-7000-8000-', leftPad(lower(hex(s)), 12, '0'))"
            }
        };
        store
            .maintenance_client()
            .query(
                &"INSERT INTO events (event_id, application, session_id, category, name, data, \
                 timestamp, client_timestamp, sent_at, received_at) \
                 SELECT generateUUIDv4(number), \
                 concat('fixture-app-', toString(s % 3)), \
                 {session_id}, \
                 concat('category-', toString(cityHash64(number, 'category') % {categories:UInt64})), \
                 ['pageview', 'cta click', 'submit', 'scroll', 'hover'][1 + cityHash64(number, 'name') % 5], \
                 concat('{\"host\":\"www.example.com\",\"path\":\"/page/', toString(number % 997), '\"}'), \
                 {start:DateTime64(6, 'UTC')} + toIntervalMicrosecond(number * {step:UInt64}) AS ts, \
                 ts, NULL, ts + toIntervalMillisecond(150) \
                 FROM (SELECT number, \
                 intDiv(number, 10 * {per_session:UInt64}) * 10 + number % 10 AS s, \
                 intDiv(s, 10) * 10 * {per_session:UInt64} + s % 10 AS first \
                 FROM numbers({events:UInt64}))"
                    .replace("{session_id}", session_id),
            )
            .param("per_session", per_session)
            .param("categories", self.categories)
            .param(
                "start",
                self.start.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            )
            .param("step", self.step_micros())
            .param("events", self.events)
            // One block, so the fixture lands as one part per month rather than many small
            // parts that merges would still be working on.
            .with_setting("max_insert_block_size", (self.events + 1).to_string())
            .with_setting("min_insert_block_size_rows", (self.events + 1).to_string())
            .execute()
            .await?;
        store
            .maintenance_client()
            .query(
                "INSERT INTO errors (error_id, application, received_at, request_id, item_index, \
                 event_id, session_id, category, name, timestamp, raw, raw_truncated, recoverable, \
                 problem_field, problem_code, problem_message) \
                 SELECT generateUUIDv4(number), \
                 concat('fixture-app-', toString(number % 3)), \
                 {start:DateTime64(6, 'UTC')} + toIntervalMicrosecond(number * {step:UInt64}) AS at, \
                 generateUUIDv4(number + 1), 0, NULL, NULL, 'category-0', 'pageview', at, \
                 '{\"category\":\"category-0\",\"name\":\"pageview\"}', false, false, \
                 ['session_id'], ['required'], ['session_id is required'] \
                 FROM numbers({errors:UInt64})",
            )
            .param(
                "start",
                self.errors_start.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            )
            .param(
                "step",
                u64::from(Self::ERROR_DAYS) * 86_400_000_000 / self.errors.max(1),
            )
            .param("errors", self.errors)
            .with_setting("max_insert_block_size", (self.errors + 1).to_string())
            .with_setting("min_insert_block_size_rows", (self.errors + 1).to_string())
            .execute()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every session's id with its first event, in id order.
    fn first_events(fixture: &Fixture) -> std::collections::BTreeMap<String, u64> {
        let mut first = std::collections::BTreeMap::new();
        for i in 0..fixture.events {
            first.entry(fixture.session_of(i)).or_insert(i);
        }
        first
    }

    /// Time-ordered ids carry their session's first event in their first 48 bits and sort by
    /// it; scattered ones do not.
    #[test]
    fn time_ordered_session_ids_sort_by_session_start() {
        let fixture = Fixture::of_size(100_000);
        let first = first_events(&fixture);
        assert_eq!(first.len() as u64, fixture.sessions);
        let mut starts = Vec::new();
        for (id, i) in &first {
            let uuid: uuid::Uuid = id.parse().unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{id}");
            let (seconds, nanos) = uuid.get_timestamp().unwrap().to_unix();
            let ms = seconds as i64 * 1000 + i64::from(nanos / 1_000_000);
            assert_eq!(ms, fixture.timestamp(*i).timestamp_millis(), "{id}");
            starts.push(*i);
        }
        // The map iterates in id order: the first events come out in time order.
        assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");

        // `session-N` ids: `session-10` sorts before `session-3`, which starts earlier.
        let scattered = fixture.with_session_ids(SessionIds::Scattered);
        assert_eq!(scattered.session_of(3), "session-3");
        let starts: Vec<u64> = first_events(&scattered).into_values().collect();
        assert!(!starts.windows(2).all(|w| w[0] < w[1]));
    }
}
