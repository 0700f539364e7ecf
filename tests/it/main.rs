//! Integration tests against the real ClickHouse engine: a server at `CLICKHOUSE_URL` when
//! it is set, otherwise the development server, started once for the whole run. All tests
//! live in this one binary so that they share that server and link once.

mod common;
mod devserver;
mod ingest;
mod openapi;
mod read;
mod read_speed;
