//! Reads behind a schema backtest (`crate::backtest`): the stored events of one type in a
//! window and the rejections of that type in a window, each newest first and bounded, streamed
//! row by row so that memory holds one event at a time, and how many of each the window holds.
//!
//! Events are chosen by `timestamp` (the index projection `time_index`, migration 8, finds the
//! window's granules, as for the tracking plan's sample); rejections by `received_at` (the
//! order of `errors`), which is also the window `errors replay --from/--to` takes, so that a
//! backtest and the replay that follows it speak of the same rejections. Every value is a
//! server-side parameter.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use super::observed::{sample_conditions, SampleSpec};
use super::read::{error_conditions, replay_query, Conditions, ErrorFilter, Order, PageSpec};
use super::read::{Param, ReadQuery, ReplayRow};
use super::{Store, StoreError};

/// Which stored rows of one event type a backtest reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacktestSpec {
    pub category: String,
    pub name: String,
    /// Only this application's rows; `None` reads every application's.
    pub application: Option<String>,
    /// Half-open: `from` inclusive, `to` exclusive; on `timestamp` for events, on
    /// `received_at` for rejections.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Rows read at most, per side (the newest).
    pub limit: u32,
}

/// One stored event as a backtest reads it: its id and its `data`.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct StoredData {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub data: String,
}

fn event_conditions(select: &str, spec: &BacktestSpec) -> Conditions {
    let sample = SampleSpec {
        category: spec.category.clone(),
        name: spec.name.clone(),
        application: spec.application.clone(),
        from: Some(spec.from),
        to: Some(spec.to),
        limit: spec.limit,
    };
    sample_conditions(select, &sample)
}

/// The SQL of the events read: the newest `limit` of the type in the window, one row per
/// (`application`, `event_id`) — a retried event stored twice is tried once.
pub fn events_query(spec: &BacktestSpec) -> ReadQuery {
    let mut query = event_conditions("SELECT event_id, data FROM events", spec).query;
    query.push(" ORDER BY timestamp DESC LIMIT 1 BY application, event_id");
    query.bind(" LIMIT {}", "limit", Param::UInt(spec.limit));
    query
}

/// The SQL counting the window's events of the type (copies of a retried event included until
/// a merge folds them).
pub fn events_count_query(spec: &BacktestSpec) -> ReadQuery {
    event_conditions("SELECT count() FROM events", spec).query
}

fn error_filter(spec: &BacktestSpec) -> ErrorFilter {
    ErrorFilter {
        application: spec.application.clone(),
        category: Some(spec.category.clone()),
        name: Some(spec.name.clone()),
        from: Some(spec.from),
        to: Some(spec.to),
        ..ErrorFilter::default()
    }
}

/// The SQL of the rejections read: the newest `limit` of the type received in the window, as a
/// replay reads them (raw input, whether it holds one whole event, whether it was recovered).
pub fn errors_query(spec: &BacktestSpec) -> ReadQuery {
    let page = PageSpec {
        order: Order::Desc,
        after: None,
        limit: spec.limit,
    };
    replay_query(&error_filter(spec), &page)
}

/// The SQL counting the rejections of the type received in the window.
pub fn errors_count_query(spec: &BacktestSpec) -> ReadQuery {
    error_conditions("SELECT count() FROM errors", &error_filter(spec)).query
}

impl Store {
    /// Streams the events of [`events_query`] into `each`; returns the rows read.
    pub async fn backtest_events(
        &self,
        spec: &BacktestSpec,
        each: impl FnMut(StoredData),
    ) -> Result<u64, StoreError> {
        self.stream(&events_query(spec), each).await
    }

    /// Streams the rejections of [`errors_query`] into `each`; returns the rows read.
    pub async fn backtest_errors(
        &self,
        spec: &BacktestSpec,
        each: impl FnMut(ReplayRow),
    ) -> Result<u64, StoreError> {
        self.stream(&errors_query(spec), each).await
    }

    /// Runs `query` and hands its rows to `each` one at a time; returns how many.
    async fn stream<T>(&self, query: &ReadQuery, mut each: impl FnMut(T)) -> Result<u64, StoreError>
    where
        T: for<'a> Row<Value<'a> = T> + for<'de> Deserialize<'de>,
    {
        let mut cursor = query.query(&self.read_client()).fetch::<T>()?;
        let mut rows = 0;
        while let Some(row) = cursor.next().await? {
            each(row);
            rows += 1;
        }
        Ok(rows)
    }

    /// Rows of the window: (events, rejections) of the type ([`events_count_query`],
    /// [`errors_count_query`]).
    pub async fn backtest_counts(&self, spec: &BacktestSpec) -> Result<(u64, u64), StoreError> {
        let client = self.read_client();
        let events = events_count_query(spec)
            .query(&client)
            .fetch_one::<u64>()
            .await?;
        let errors = errors_count_query(spec)
            .query(&client)
            .fetch_one::<u64>()
            .await?;
        Ok((events, errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_of_a_backtest_read_is_a_placeholder() {
        let spec = BacktestSpec {
            category: "c' --".into(),
            name: "n".into(),
            application: Some("a".into()),
            from: Utc::now(),
            to: Utc::now(),
            limit: 10,
        };
        assert_eq!(
            events_query(&spec).sql(),
            "SELECT event_id, data FROM events WHERE category = {category:String} \
             AND name = {name:String} AND application = {application:String} \
             AND timestamp >= {from:DateTime64(6, 'UTC')} AND timestamp < {to:DateTime64(6, 'UTC')} \
             ORDER BY timestamp DESC LIMIT 1 BY application, event_id LIMIT {limit:UInt32}"
        );
        for query in [
            events_query(&spec),
            events_count_query(&spec),
            errors_query(&spec),
            errors_count_query(&spec),
        ] {
            assert!(!query.sql().contains("c'"), "{}", query.sql());
            assert!(!query.sql().contains('?'), "{}", query.sql());
            let names: Vec<_> = query.params().iter().map(|(name, _)| *name).collect();
            for name in ["category", "name", "application", "from", "to"] {
                assert!(names.contains(&name), "{name} not bound in {}", query.sql());
            }
        }
    }
}
