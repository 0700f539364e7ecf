//! Reads behind the tracking plan (`crate::plan`): a bounded sample of one event type's stored
//! `data`, streamed row by row, and per-type counts of accepted and rejected events.
//!
//! A sample is the newest `limit` events of the type (by `timestamp`, one row per `event_id`)
//! in a time range: the index projection `time_index` (migration 8) finds the range's rows, and
//! ClickHouse reads only the granules of `events` that hold them. Rows are handed to the caller
//! one at a time, so memory holds one `data` document, not the sample.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;

use super::read::{Conditions, Param, ReadQuery};
use super::{Store, StoreError};

/// Which stored events of one type to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSpec {
    pub category: String,
    pub name: String,
    pub application: Option<String>,
    /// On `timestamp`, half-open: `from` inclusive, `to` exclusive.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Newest events at most.
    pub limit: u32,
}

/// `select` with the conditions of `spec`'s type, application and `timestamp` range (also the
/// window of a schema backtest, `store::backtest`).
pub(super) fn sample_conditions(select: &str, spec: &SampleSpec) -> Conditions {
    let mut conditions = Conditions::new(select);
    conditions.and(
        "category = {}",
        "category",
        Param::Text(spec.category.clone()),
    );
    conditions.and("name = {}", "name", Param::Text(spec.name.clone()));
    conditions.and_text("application = {}", "application", &spec.application);
    conditions.and_time("timestamp >= {}", "from", &spec.from);
    conditions.and_time("timestamp < {}", "to", &spec.to);
    conditions
}

/// The SQL of a sample: `data` of the newest `limit` events of the type.
pub fn sample_query(spec: &SampleSpec) -> ReadQuery {
    let mut query = sample_conditions("SELECT data FROM events", spec).query;
    // A retried event stored twice counts once.
    query.push(" ORDER BY timestamp DESC LIMIT 1 BY event_id");
    query.bind(" LIMIT {}", "limit", Param::UInt(spec.limit));
    query
}

/// The SQL counting every stored event the sample is drawn from (copies of a retried event
/// included until a merge folds them).
pub fn matching_query(spec: &SampleSpec) -> ReadQuery {
    sample_conditions("SELECT count() FROM events", spec).query
}

/// Accepted and rejected events of one type received in a period, and the rejections by
/// problem code.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct TypeOutcomes {
    pub category: String,
    pub name: String,
    pub accepted: u64,
    /// Rejected events of the type (each counted once, whatever its number of problems).
    pub rejected: u64,
    /// (problem code, rejected events with at least one problem of that code), most first.
    pub codes: Vec<(String, u64)>,
}

/// Most event types one outcome query returns; types beyond are left out (the newest
/// traffic of an organisation has dozens).
pub const MAX_TYPES: u32 = 1000;

/// The SQL of [`TypeOutcomes`] for events and rejections received in [`from`, `to`).
/// Rejections without a category or name (an unreadable item) belong to no type and are left
/// out. By receipt time on both sides, so that the share is of what arrived in the period.
pub fn outcomes_query(
    application: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ReadQuery {
    let period = |query: &mut ReadQuery| {
        query.bind(" WHERE received_at >= {}", "from", Param::Time(from));
        query.bind(" AND received_at < {}", "to", Param::Time(to));
        if let Some(application) = application {
            query.bind(
                " AND application = {}",
                "application",
                Param::Text(application.to_owned()),
            );
        }
    };
    let mut query = ReadQuery::new(
        "SELECT category, name, sum(accepted) AS accepted, sum(rejected) AS rejected, \
         arraySort(x -> -x.2, groupArrayIf((code, events), code != '')) AS codes FROM (\
         SELECT toString(category) AS category, toString(name) AS name, count() AS accepted, \
         toUInt64(0) AS rejected, '' AS code, toUInt64(0) AS events FROM events",
    );
    period(&mut query);
    query.push(
        " GROUP BY category, name UNION ALL \
         SELECT toString(assumeNotNull(category)), toString(assumeNotNull(name)), toUInt64(0), \
         count(), '', toUInt64(0) FROM errors",
    );
    period(&mut query);
    query.push(
        " AND category IS NOT NULL AND name IS NOT NULL GROUP BY category, name UNION ALL \
         SELECT toString(assumeNotNull(category)), toString(assumeNotNull(name)), toUInt64(0), \
         toUInt64(0), toString(code), count() FROM errors \
         ARRAY JOIN arrayDistinct(problem_code) AS code",
    );
    period(&mut query);
    query.push(
        " AND category IS NOT NULL AND name IS NOT NULL GROUP BY category, name, code) \
         GROUP BY category, name ORDER BY category, name",
    );
    query.bind(" LIMIT {}", "max_types", Param::UInt(MAX_TYPES));
    query
}

#[derive(Row, Deserialize)]
struct DataRow {
    data: String,
}

impl Store {
    /// Streams the `data` of a sample ([`sample_query`]) into `each`; returns the rows read.
    pub async fn sample_data(
        &self,
        spec: &SampleSpec,
        mut each: impl FnMut(&str),
    ) -> Result<u64, StoreError> {
        let mut cursor = sample_query(spec)
            .query(&self.read_client())
            .fetch::<DataRow>()?;
        let mut rows = 0;
        while let Some(row) = cursor.next().await? {
            each(&row.data);
            rows += 1;
        }
        Ok(rows)
    }

    /// Stored events of the sampled type ([`matching_query`]).
    pub async fn count_matching(&self, spec: &SampleSpec) -> Result<u64, StoreError> {
        Ok(matching_query(spec)
            .query(&self.read_client())
            .fetch_one::<u64>()
            .await?)
    }

    /// Accepted and rejected events by type ([`outcomes_query`]).
    pub async fn type_outcomes(
        &self,
        application: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<TypeOutcomes>, StoreError> {
        Ok(outcomes_query(application, from, to)
            .query(&self.read_client())
            .fetch_all::<TypeOutcomes>()
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_of_a_sample_is_a_placeholder() {
        let spec = SampleSpec {
            category: "c' --".into(),
            name: "n".into(),
            application: Some("a".into()),
            from: Some(Utc::now()),
            to: None,
            limit: 10,
        };
        let query = sample_query(&spec);
        assert_eq!(
            query.sql(),
            "SELECT data FROM events WHERE category = {category:String} AND name = {name:String} \
             AND application = {application:String} AND timestamp >= {from:DateTime64(6, 'UTC')} \
             ORDER BY timestamp DESC LIMIT 1 BY event_id LIMIT {limit:UInt32}"
        );
        assert_eq!(query.params().len(), 5);
        let outcomes = outcomes_query(Some("a"), Utc::now(), Utc::now());
        assert!(!outcomes.sql().contains('?'));
        let names: Vec<_> = outcomes.params().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["from", "to", "application", "max_types"]);
    }
}
