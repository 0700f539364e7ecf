//! Integration tests against the real ClickHouse engine: a server at `CLICKHOUSE_URL` when
//! it is set (its user `default`'s password in `CLICKHOUSE_PASSWORD`), otherwise the development server, started once for the whole run. All tests
//! live in this one binary so that they share that server and link once.

mod alerts;
mod architecture;
mod auth;
mod backtest;
mod cli;
mod client;
mod cluster_parity;
mod common;
mod connections;
mod dashboards;
mod deploy;
mod devserver;
mod docs;
mod erasure;
mod full_disk;
mod ingest;
mod ledger;
mod links;
mod live;
mod metrics;
mod micro;
mod migrations;
mod old_clients;
mod openapi;
mod plan;
mod prefer;
mod privacy;
mod read;
mod read_speed;
mod recover;
mod refusals;
mod scale;
mod schemas;
mod session_order;
mod sessions;
mod skeleton;
mod spool;
mod tenancy;
mod timestamps;
mod wire;
