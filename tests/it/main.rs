//! Integration tests against the real ClickHouse engine: a server at `CLICKHOUSE_URL` when
//! it is set, otherwise the development server, started once for the whole run. All tests
//! live in this one binary so that they share that server and link once.

mod alerts;
mod auth;
mod client;
mod common;
mod connections;
mod dashboards;
mod deploy;
mod devserver;
mod docs;
mod erasure;
mod full_disk;
mod ingest;
mod metrics;
mod openapi;
mod plan;
mod read;
mod read_speed;
mod recover;
mod refusals;
mod scale;
mod schemas;
mod sessions;
mod skeleton;
mod spool;
mod tenancy;
