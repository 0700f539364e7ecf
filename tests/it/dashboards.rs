//! The Grafana dashboards under `grafana/dashboards/`, tested without Grafana:
//!
//! - every dashboard parses and every target names a datasource provisioned in
//!   `grafana/provisioning/datasources/` by its fixed uid; ClickHouse targets are raw SQL
//!   (`editorType: "sql"`) for plugin 4.x with a format that matches their query type;
//! - the Events and Sessions dashboards annotate the minutes with refused or rejected events,
//!   from the completeness ledger (`ingest_ledger`, issue 31), and every annotation query is
//!   checked as a panel's target is;
//! - every ClickHouse query (panels, variables and annotations), with the dashboard variables substituted
//!   as Grafana's frontend does ([`variables`]) and the plugin's macros expanded as its
//!   backend does ([`macros`]), runs on a database that The Eye's own ingest pipeline seeded
//!   over HTTP, returns rows, and returns the columns its panel refers to;
//! - every Prometheus expression names only metrics that The Eye's `/metrics` exports after
//!   real traffic.

mod macros;
pub mod promql;
mod variables;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::TestApp;
use macros::QueryRange;
use variables::Values;

const CLICKHOUSE: &str = "grafana-clickhouse-datasource";
const PROMETHEUS: &str = "prometheus";

pub fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every dashboard: file name and JSON.
pub fn dashboards() -> Vec<(String, Value)> {
    let directory = repository().join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&directory)
        .expect("grafana/dashboards exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{} does not parse: {error}", path.display()));
            (file_name(&path), json)
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Panels, with those nested in collapsed rows.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

/// The dashboard's variables.
pub fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .map(|list| list.iter().collect())
        .unwrap_or_default()
}

/// The dashboard's annotation queries, without Grafana's built-in one (`builtIn: 1`).
pub fn annotations(dashboard: &Value) -> Vec<&Value> {
    dashboard["annotations"]["list"]
        .as_array()
        .map(|list| list.iter().filter(|item| item["builtIn"] != 1).collect())
        .unwrap_or_default()
}

/// What every ClickHouse query of a dashboard must be: raw SQL for plugin 4.x, a format that
/// matches its query type, a `SELECT`.
fn check_clickhouse_target(context: &str, target: &Value) {
    assert_eq!(target["editorType"], "sql", "{context}");
    let version = target["pluginVersion"].as_str().unwrap_or("");
    let major = version
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok());
    assert_eq!(
        major,
        Some(4),
        "{context}: pluginVersion `{version}` is not 4.x"
    );
    assert_eq!(version.split('.').count(), 3, "{context}: {version}");
    let (query_type, format) = (target["queryType"].as_str(), target["format"].as_u64());
    assert!(
        matches!(
            (query_type, format),
            (Some("timeseries"), Some(0)) | (Some("table"), Some(1))
        ),
        "{context}: queryType {query_type:?} with format {format:?}"
    );
    let sql = target["rawSql"].as_str().unwrap_or("");
    assert!(
        sql.trim_start().to_uppercase().starts_with("SELECT"),
        "{context}"
    );
}

/// Provisioned datasources: type → uids.
pub fn provisioned_datasources() -> BTreeMap<String, BTreeSet<String>> {
    let path = repository().join("grafana/provisioning/datasources/datasources.yml");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("datasources.yml parses");
    let mut provisioned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for datasource in yaml["datasources"].as_sequence().expect("datasources list") {
        let kind = datasource["type"].as_str().expect("type").to_owned();
        let uid = datasource["uid"].as_str().expect("a fixed uid").to_owned();
        provisioned.entry(kind).or_default().insert(uid);
    }
    provisioned
}

/// The SQL of a ClickHouse variable: its `query` as a string or an object with `rawSql`.
fn variable_sql(variable: &Value) -> &str {
    variable["query"]
        .as_str()
        .or_else(|| variable["query"]["rawSql"].as_str())
        .unwrap_or_else(|| panic!("variable {} has no SQL", variable["name"]))
}

/// Every Prometheus expression of the dashboards: panel targets and variable queries.
pub fn dashboard_prometheus_metric_names() -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for (file, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if target["datasource"]["type"] == PROMETHEUS {
                    let expr = target["expr"]
                        .as_str()
                        .expect("a Prometheus target has expr");
                    for name in promql::metric_names(expr) {
                        names.insert(name, format!("{file}: {}", panel["title"]));
                    }
                }
            }
        }
        for variable in variables(&dashboard) {
            if variable["datasource"]["type"] == PROMETHEUS {
                let query = variable["query"]["query"]
                    .as_str()
                    .or_else(|| variable["query"].as_str())
                    .expect("a Prometheus variable query");
                for name in promql::variable_metric_names(query) {
                    names.insert(name, format!("{file}: variable {}", variable["name"]));
                }
            }
        }
    }
    names
}

/// Every dashboard parses; every panel, target, variable and annotation names a datasource
/// Grafana is provisioned with; every panel has a target, every annotation is enabled, and
/// each dashboard has the targets it is expected to have.
///
/// One test: it walks all dashboards once, collecting every (what, its datasource) pair; no
/// process is started, and the length is the walk over panels, targets and variables.
#[test]
fn dashboards_parse_and_target_the_provisioned_datasources() {
    let provisioned = provisioned_datasources();
    assert!(provisioned.contains_key(CLICKHOUSE) && provisioned.contains_key(PROMETHEUS));
    let dashboards = dashboards();
    let files: Vec<&str> = dashboards.iter().map(|(file, _)| file.as_str()).collect();
    assert_eq!(
        files,
        ["errors.json", "events.json", "ingest.json", "sessions.json"]
    );
    let mut uids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for (file, dashboard) in &dashboards {
        assert!(
            uids.insert(dashboard["uid"].as_str().expect("a pinned uid").to_owned()),
            "{file}"
        );
        assert!(
            titles.insert(dashboard["title"].as_str().expect("a title").to_owned()),
            "{file}"
        );
        let mut ids = BTreeSet::new();
        let mut clickhouse_targets = 0;
        let mut prometheus_targets = 0;
        // (what, its datasource) for every panel, target and variable.
        let mut datasources = Vec::new();
        for variable in variables(dashboard) {
            datasources.push((
                format!("variable {}", variable["name"]),
                &variable["datasource"],
            ));
        }
        for panel in panels(dashboard) {
            if panel["type"] == "row" {
                continue;
            }
            let title = &panel["title"];
            assert!(
                ids.insert(panel["id"].as_u64().expect("panel id")),
                "{file}: duplicate id"
            );
            assert!(
                panel["gridPos"]["w"].as_u64().is_some(),
                "{file}: {title} has no gridPos"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title} has no target");
            datasources.push((format!("panel {title}"), &panel["datasource"]));
            for target in targets {
                let context = format!("{file}: {title} {}", target["refId"]);
                datasources.push((
                    format!("{title} {}", target["refId"]),
                    &target["datasource"],
                ));
                match target["datasource"]["type"].as_str() {
                    Some(CLICKHOUSE) => {
                        clickhouse_targets += 1;
                        check_clickhouse_target(&context, target);
                    }
                    Some(PROMETHEUS) => {
                        prometheus_targets += 1;
                        assert!(
                            target["expr"].as_str().is_some_and(|expr| !expr.is_empty()),
                            "{context}"
                        );
                    }
                    other => panic!("{context}: datasource type {other:?}"),
                }
            }
        }
        let mut ledger_annotations = 0;
        for annotation in annotations(dashboard) {
            let name = &annotation["name"];
            let context = format!("{file}: annotation {name}");
            assert!(
                name.as_str().is_some_and(|name| !name.is_empty()),
                "{context}: no name"
            );
            assert_eq!(annotation["enable"], true, "{context}: not enabled");
            let target = &annotation["target"];
            assert_eq!(
                annotation["datasource"], target["datasource"],
                "{context}: the annotation and its query name different datasources"
            );
            assert_eq!(
                target["datasource"]["type"], CLICKHOUSE,
                "{context}: only ClickHouse annotations are tested"
            );
            check_clickhouse_target(&context, target);
            if target["rawSql"]
                .as_str()
                .is_some_and(|sql| sql.contains("FROM ingest_ledger"))
            {
                ledger_annotations += 1;
            }
            datasources.push((format!("annotation {name}"), &annotation["datasource"]));
        }
        if matches!(file.as_str(), "events.json" | "sessions.json") {
            assert_eq!(
                ledger_annotations, 1,
                "{file}: one annotation of the minutes with refusals, from ingest_ledger"
            );
        }
        for (what, datasource) in datasources {
            let kind = datasource["type"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: {what} has no datasource type"));
            let uid = datasource["uid"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: {what} has no datasource uid"));
            assert!(
                provisioned.get(kind).is_some_and(|uids| uids.contains(uid)),
                "{file}: {what} uses {kind} datasource `{uid}`, which is not provisioned"
            );
        }
        match file.as_str() {
            "ingest.json" => assert!(prometheus_targets >= 20, "{file}: {prometheus_targets}"),
            _ => assert!(clickhouse_targets >= 6, "{file}: {clickhouse_targets}"),
        }
    }
}

/// Seeds events and rejections through The Eye's HTTP ingest, as applications would.
async fn seed(app: &TestApp) {
    let now = chrono::Utc::now();
    let pages = [
        ("page interaction", "pageview", "www.example.com", "/"),
        ("page interaction", "cta click", "www.example.com", "/"),
        (
            "page interaction",
            "pageview",
            "www.example.com",
            "/pricing",
        ),
        (
            "form interaction",
            "submit",
            "shop.example.com",
            "/checkout",
        ),
    ];
    let mut events = Vec::new();
    for (s, session) in ["s-alpha", "s-beta", "s-gamma"].iter().enumerate() {
        for (i, (category, name, host, path)) in pages.iter().enumerate() {
            let at = now - chrono::TimeDelta::minutes((20 - 5 * i - s) as i64);
            // What the shipped payload schemas require of each type.
            let data = match *name {
                "cta click" => json!({"host": host, "path": path, "element": "chat bubble"}),
                "submit" => json!({"host": host, "path": path, "form": {"first_name": "Ann"}}),
                _ => json!({"host": host, "path": path}),
            };
            events.push(json!({
                "session_id": session,
                "category": category,
                "name": name,
                "data": data,
                "timestamp": at.to_rfc3339(),
            }));
        }
    }
    // Two rejected events in an otherwise valid batch, and a batch item that is no object.
    events.push(json!({"category": "page interaction", "name": "pageview", "data": {"path": "/"}, "timestamp": now.to_rfc3339()}));
    events.push(json!({"session_id": "s-alpha", "category": "page interaction", "name": "pageview", "data": {"path": "/"}, "timestamp": "yesterday", "colour": "red"}));
    events.push(json!(42));
    let response = app.post_events(&Value::from(events)).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 12);
    assert_eq!(answer["rejected"], 3);
    let response = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .body("{\"session_id\": \"s-broken\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM events", 12)
            .await,
        12
    );
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM errors", 4).await,
        4
    );
    // The completeness ledger, written every 100 ms here: 12 accepted, 3 rejected, and the
    // request refused as malformed JSON.
    assert_eq!(
        app.db
            .wait_for_count(
                "SELECT sum(if(events > 0, events, requests)) FROM ingest_ledger",
                16
            )
            .await,
        16
    );
}

/// The Eye for the dashboard tests: the completeness ledger written every 100 ms.
async fn start() -> TestApp {
    TestApp::start_with(|config| config.ledger.flush_interval_ms = 100).await
}

/// A query's answer in ClickHouse's `JSON` format: column names and types, and rows.
struct Answer {
    columns: Vec<(String, String)>,
    rows: Vec<Value>,
}

impl Answer {
    fn has(&self, name: &str) -> bool {
        self.columns.iter().any(|(column, _)| column == name)
    }
}

async fn run(app: &TestApp, sql: &str) -> Result<Answer, String> {
    let bytes = app
        .db
        .client()
        .query(sql)
        .fetch_bytes("JSON")
        .map_err(|error| error.to_string())?
        .collect()
        .await
        .map_err(|error| error.to_string())?;
    let json: Value = serde_json::from_slice(&bytes).map_err(|error| error.to_string())?;
    let columns = json["meta"]
        .as_array()
        .expect("meta")
        .iter()
        .map(|column| {
            (
                column["name"].as_str().unwrap().to_owned(),
                column["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Ok(Answer {
        columns,
        rows: json["data"].as_array().expect("data").clone(),
    })
}

/// Variable substitution, macro expansion and a run: what Grafana does for one query.
async fn run_as_grafana(
    app: &TestApp,
    sql: &str,
    values: &Values,
    range: &QueryRange,
) -> Result<(String, Answer), String> {
    let substituted = variables::substitute(sql, values)?;
    let expanded = macros::expand(&substituted, range)?;
    let answer = run(app, &expanded)
        .await
        .map_err(|error| format!("{error}\n--- SQL:\n{expanded}"))?;
    Ok((expanded, answer))
}

fn is_numeric(kind: &str) -> bool {
    let kind = kind
        .trim_start_matches("Nullable(")
        .trim_start_matches("LowCardinality(");
    ["UInt", "Int", "Float", "Decimal"]
        .iter()
        .any(|prefix| kind.starts_with(prefix))
}

/// Checks that `answer` has what the panel refers to: a time column and values for a time
/// series; every column named in field overrides, transformations and label-based display
/// names.
fn check_columns(context: &str, panel: &Value, target: &Value, answer: &Answer) {
    let names: Vec<&str> = answer
        .columns
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    if target["format"] == 0 {
        let time = answer.columns.iter().find(|(name, _)| name == "time");
        assert!(
            time.is_some_and(|(_, kind)| kind.starts_with("DateTime")),
            "{context}: a time series needs a DateTime column `time`: {:?}",
            answer.columns
        );
        assert!(
            answer.columns.iter().any(|(_, kind)| is_numeric(kind)),
            "{context}: a time series needs a numeric column: {:?}",
            answer.columns
        );
    }
    for column in referenced_columns(panel) {
        assert!(
            answer.has(&column),
            "{context}: the panel refers to column `{column}`, the query returns {names:?}"
        );
    }
    let display = panel["fieldConfig"]["defaults"]["displayName"]
        .as_str()
        .unwrap_or("");
    for label in display.split("${__field.labels.").skip(1) {
        let label = label.split('}').next().unwrap();
        assert!(
            answer.has(label),
            "{context}: displayName uses label `{label}`, the query returns {names:?}"
        );
    }
}

/// A panel and one of its targets.
type PanelTarget<'a> = (&'a Value, &'a Value);

/// Checks that an annotation query's `answer` has what Grafana places and shows: a `time` and
/// a `text` column; one from the ledger (`ingest_ledger`) names the seeded refusals, the
/// malformed request and the rejected events by their first problem's code.
fn check_annotation(context: &str, sql: &str, answer: &Answer) {
    for (column, kind) in [("time", "DateTime"), ("text", "String")] {
        assert!(
            answer.columns.iter().any(|(name, found)| name == column
                && found
                    .trim_start_matches("LowCardinality(")
                    .starts_with(kind)),
            "{context}: an annotation needs a {kind} column `{column}`: {:?}",
            answer.columns
        );
    }
    if sql.contains("FROM ingest_ledger") {
        let texts: Vec<&str> = answer
            .rows
            .iter()
            .filter_map(|row| row["text"].as_str())
            .collect();
        let texts = texts.join(", ");
        assert!(
            texts.contains("refused malformed_json: 1 request") && texts.contains("rejected "),
            "{context}: the seeded refusals are not in the annotations: {texts}"
        );
    }
}

/// Columns a panel names in its field overrides (`byName`) and its `organize` transformation.
fn referenced_columns(panel: &Value) -> BTreeSet<String> {
    let mut columns = BTreeSet::new();
    for rule in panel["fieldConfig"]["overrides"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if rule["matcher"]["id"] == "byName" {
            columns.insert(rule["matcher"]["options"].as_str().unwrap().to_owned());
        }
    }
    for transformation in panel["transformations"].as_array().into_iter().flatten() {
        if transformation["id"] == "organize" {
            for key in ["renameByName", "excludeByName", "indexByName"] {
                if let Some(map) = transformation["options"][key].as_object() {
                    columns.extend(map.keys().cloned());
                }
            }
        }
    }
    columns
}

/// Every ClickHouse query of every dashboard (targets and annotations) runs on seeded data
/// after its variables are resolved as Grafana resolves them (All first, then a concrete value),
/// and returns the columns its panel uses.
///
/// One test: one seeded instance serves every query; the loop over dashboards is the test, and
/// a test per query would seed the data again for each.
#[tokio::test]
async fn every_clickhouse_query_runs_on_seeded_data_and_returns_the_columns_its_panel_uses() {
    let app = start().await;
    seed(&app).await;
    let now = chrono::Utc::now();
    let range = QueryRange {
        from: now - chrono::TimeDelta::hours(6),
        to: now + chrono::TimeDelta::minutes(1),
        interval: Duration::from_secs(60),
    };
    let mut queries_run = 0;
    let mut annotations_run = 0;
    for (file, dashboard) in dashboards() {
        // Variables first, in order, as Grafana resolves them: each starts at All when it
        // offers All, else at its first value; a concrete selection is tried as well.
        let mut all = Values::new();
        let mut concrete = Values::new();
        for variable in variables(&dashboard) {
            if variable["datasource"]["type"] != CLICKHOUSE {
                continue;
            }
            let name = variable["name"].as_str().unwrap().to_owned();
            let (_, answer) = run_as_grafana(&app, variable_sql(variable), &all, &range)
                .await
                .unwrap_or_else(|error| panic!("{file}: variable {name}: {error}"));
            queries_run += 1;
            let first = answer
                .rows
                .first()
                .and_then(|row| {
                    row.as_object()?
                        .values()
                        .next()?
                        .as_str()
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| {
                    panic!("{file}: variable {name} offers no value on the seeded data")
                });
            let offers_all = variable["includeAll"] == true;
            all.insert(
                name.clone(),
                vec![if offers_all {
                    "$__all".to_owned()
                } else {
                    first.clone()
                }],
            );
            concrete.insert(name, vec![first]);
        }
        // Every ClickHouse query: a panel's target (`Some`) or an annotation's (`None`).
        let mut queries: Vec<(String, &str, Option<PanelTarget>)> = Vec::new();
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if target["datasource"]["type"] == CLICKHOUSE {
                    let sql = target["rawSql"].as_str().unwrap();
                    queries.push((panel["title"].to_string(), sql, Some((panel, target))));
                }
            }
        }
        for annotation in annotations(&dashboard) {
            let sql = annotation["target"]["rawSql"].as_str().unwrap_or("");
            queries.push((format!("annotation {}", annotation["name"]), sql, None));
        }
        for (what, sql, panel_target) in queries {
            let mut selections = vec![("default selection", &all)];
            if concrete != all {
                selections.push(("one value per variable", &concrete));
            }
            for (selection, values) in selections {
                let context = format!("{file}: {what} ({selection})");
                let (expanded, answer) = run_as_grafana(&app, sql, values, &range)
                    .await
                    .unwrap_or_else(|error| panic!("{context}: {error}"));
                assert!(
                    !expanded.contains("$__"),
                    "{context}: unexpanded macro in\n{expanded}"
                );
                assert!(
                    !answer.rows.is_empty(),
                    "{context}: no row on the seeded data from\n{expanded}"
                );
                match panel_target {
                    Some((panel, target)) => {
                        queries_run += 1;
                        check_columns(&context, panel, target, &answer);
                    }
                    None => {
                        annotations_run += 1;
                        check_annotation(&context, sql, &answer);
                    }
                }
            }
        }
    }
    assert!(
        queries_run >= 20,
        "only {queries_run} ClickHouse queries found"
    );
    assert!(
        annotations_run >= 2,
        "only {annotations_run} annotation queries found"
    );
}

/// The seeded data must come out right, not merely as some rows: spot checks of the values
/// of the panels of each dashboard.
///
/// One seeded instance for all of them, checked dashboard by dashboard in the helpers below
/// (seeding is the expensive part); the recovery one goes last because it adds a row.
#[tokio::test]
async fn panels_show_the_seeded_numbers() {
    let app = start().await;
    seed(&app).await;
    let now = chrono::Utc::now();
    let range = QueryRange {
        from: now - chrono::TimeDelta::hours(6),
        to: now + chrono::TimeDelta::minutes(1),
        interval: Duration::from_secs(60),
    };
    events_panels_show_pages_and_a_sessions_events(&app, &range).await;
    ingest_completeness_counts_what_the_client_was_answered(&app, &range).await;
    error_panels_show_fields_shares_and_the_latest_rejection(&app, &range).await;
    session_panels_show_three_sessions_of_four_events(&app, &range).await;
    recovered_rejections_are_told_apart_from_outstanding_ones(&app, &range).await;
}

/// The SQL of the first target of the panel titled `title` in the dashboard `file`.
fn panel_sql(file: &str, title: &str) -> String {
    let dashboard = dashboards()
        .into_iter()
        .find(|(name, _)| name == file)
        .unwrap()
        .1;
    let panel = panels(&dashboard)
        .into_iter()
        .find(|panel| panel["title"] == title)
        .cloned();
    panel.unwrap_or_else(|| panic!("{file}: no panel {title}"))["targets"][0]["rawSql"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The answer of the panel titled `title` in the dashboard `file`, run as Grafana runs it.
async fn panel_answer(
    app: &TestApp,
    file: &str,
    title: &str,
    values: &Values,
    range: &QueryRange,
) -> Answer {
    run_as_grafana(app, &panel_sql(file, title), values, range)
        .await
        .unwrap()
        .1
}

/// The `application` variable set to every application.
fn all_applications() -> Values {
    Values::from([("application".to_owned(), vec!["$__all".to_owned()])])
}

/// `events.json`: the top page, and one session's events in timestamp order.
async fn events_panels_show_pages_and_a_sessions_events(app: &TestApp, range: &QueryRange) {
    let pages = panel_answer(app, "events.json", "Top pages", &Values::new(), range).await;
    assert_eq!(pages.rows[0]["host"], "www.example.com");
    assert_eq!(pages.rows[0]["path"], "/");
    assert_eq!(pages.rows[0]["events"].to_string().trim_matches('"'), "6");
    assert_eq!(pages.rows[0]["sessions"].to_string().trim_matches('"'), "3");

    let session = Values::from([("session".to_owned(), vec!["s-beta".to_owned()])]);
    let events = panel_answer(
        app,
        "events.json",
        "Events of session $session",
        &session,
        range,
    )
    .await;
    let names: Vec<&str> = events
        .rows
        .iter()
        .map(|row| row["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["pageview", "cta click", "pageview", "submit"],
        "in timestamp order"
    );
}

/// `ingest.json`: what the client was answered, by outcome.
async fn ingest_completeness_counts_what_the_client_was_answered(
    app: &TestApp,
    range: &QueryRange,
) {
    // What the client was answered, by outcome: 12 accepted, 3 rejected (by their first
    // problem's code), one body refused as malformed JSON.
    let ledger = panel_answer(
        app,
        "ingest.json",
        "Ingest completeness",
        &Values::new(),
        range,
    )
    .await;
    let mut outcomes = BTreeMap::<String, u64>::new();
    for row in &ledger.rows {
        let events: u64 = row["events"].to_string().trim_matches('"').parse().unwrap();
        *outcomes
            .entry(row["outcome"].as_str().unwrap().to_owned())
            .or_default() += events;
    }
    assert_eq!(outcomes.remove("accepted"), Some(12), "{outcomes:?}");
    assert_eq!(
        outcomes.remove("refused: malformed_json"),
        Some(1),
        "{outcomes:?}"
    );
    let rejected: u64 = outcomes
        .iter()
        .filter(|(outcome, _)| outcome.starts_with("rejected: "))
        .map(|(_, events)| events)
        .sum();
    assert_eq!(rejected, 3, "{outcomes:?}");
}

/// `errors.json`: the failing fields, the rejected shares by type and code, and the latest
/// rejection shown whole.
async fn error_panels_show_fields_shares_and_the_latest_rejection(
    app: &TestApp,
    range: &QueryRange,
) {
    let all = all_applications();
    let fields = panel_answer(app, "errors.json", "Top failing fields", &all, range).await;
    let pairs: BTreeSet<(String, String)> = fields
        .rows
        .iter()
        .map(|row| {
            (
                row["field"].as_str().unwrap().to_owned(),
                row["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (field, code) in [
        ("session_id", "missing_field"),
        ("timestamp", "invalid_timestamp"),
        ("colour", "unknown_field"),
        ("(whole event)", "not_an_object"),
        ("(whole request)", "malformed_json"),
    ] {
        assert!(
            pairs.contains(&(field.to_owned(), code.to_owned())),
            "{field} {code} missing from {pairs:?}"
        );
    }

    let shares = panel_answer(
        app,
        "errors.json",
        "Rejected share by event type and code",
        &all,
        range,
    )
    .await;
    // Six pageviews accepted, two rejected: one without session_id, one with a bad
    // timestamp and an unknown field, and neither with the `host` the schema requires. An
    // event with several codes counts under each.
    let shares: BTreeSet<(String, String, String, String)> = shares
        .rows
        .iter()
        .map(|row| {
            let text = |key: &str| row[key].to_string().trim_matches('"').to_owned();
            (
                text("name"),
                text("code"),
                text("rejected"),
                format!("{}/{}", text("received"), text("share")),
            )
        })
        .collect();
    for (code, rejected, share) in [
        ("missing_field", "1", "8/0.125"),
        ("invalid_timestamp", "1", "8/0.125"),
        ("unknown_field", "1", "8/0.125"),
        ("required", "2", "8/0.25"),
    ] {
        let row = (
            "pageview".to_owned(),
            code.to_owned(),
            rejected.to_owned(),
            share.to_owned(),
        );
        assert!(shares.contains(&row), "{row:?} not in {shares:?}");
    }
    assert_eq!(
        shares.len(),
        4,
        "rejections of no type are left out: {shares:?}"
    );

    let latest = panel_answer(app, "errors.json", "Latest rejections", &all, range).await;
    let broken = latest
        .rows
        .iter()
        .find(|row| row["raw"] == "{\"session_id\": \"s-broken\", ")
        .expect("the malformed body");
    assert!(
        broken["problems"]
            .as_str()
            .unwrap()
            .starts_with("(whole): malformed_json ("),
        "{broken}"
    );
}

/// `sessions.json`: counts, bounces, durations and paths of the three seeded sessions.
async fn session_panels_show_three_sessions_of_four_events(app: &TestApp, range: &QueryRange) {
    let all = all_applications();
    // Three sessions of four events over 15 minutes: two pageviews each (no bounce), entering
    // on `/` and leaving on `/checkout`.
    let sessions = |title: &'static str| {
        let all = all.clone();
        async move { panel_answer(app, "sessions.json", title, &all, range).await }
    };
    let value = |answer: &Answer, column: &str| {
        answer.rows[0][column]
            .to_string()
            .trim_matches('"')
            .to_owned()
    };
    let count = sessions("Sessions").await;
    assert_eq!(value(&count, "sessions"), "3");
    assert_eq!(value(&sessions("Bounce share").await, "bounce_share"), "0");
    let duration = sessions("Session duration").await;
    assert_eq!(value(&duration, "median_s"), "900");
    assert_eq!(value(&duration, "p90_s"), "900");
    assert_eq!(value(&sessions("Events per session").await, "median"), "4");
    let entry = sessions("Top entry paths").await;
    assert_eq!(
        (value(&entry, "path"), value(&entry, "sessions")),
        ("/".to_owned(), "3".to_owned())
    );
    let exit = sessions("Top exit paths").await;
    assert_eq!(
        (value(&exit, "path"), value(&exit, "sessions")),
        ("/checkout".to_owned(), "3".to_owned())
    );
}

/// `errors.json`'s split of outstanding and recovered rejections, after one is recovered.
async fn recovered_rejections_are_told_apart_from_outstanding_ones(
    app: &TestApp,
    range: &QueryRange,
) {
    let all = all_applications();
    // One of the four rejections recovered (as `errors replay` records it).
    app.db
        .client()
        .query(
            "INSERT INTO recoveries SELECT error_id, application, generateUUIDv4(), received_at, \
             now64(6) FROM errors ORDER BY received_at, error_id LIMIT 1",
        )
        .execute()
        .await
        .unwrap();
    let split = panel_answer(
        app,
        "errors.json",
        "Outstanding vs recovered rejections",
        &all,
        range,
    )
    .await;
    let count = |column: &str| {
        split.rows[0][column]
            .to_string()
            .trim_matches('"')
            .to_owned()
    };
    assert_eq!(
        (count("outstanding"), count("recovered")),
        ("3".into(), "1".into())
    );
}

/// Checks `used` (metric name → where) against a live scrape after traffic. `up` is recorded
/// by Prometheus itself for every target.
pub fn assert_exported(used: &BTreeMap<String, String>, exported: &BTreeSet<String>) {
    for (name, place) in used {
        let known = exported.contains(name) || name == "up";
        assert!(
            known,
            "{place} uses `{name}`, which /metrics does not export; it exports {exported:?}"
        );
    }
}

#[tokio::test]
async fn every_dashboard_expression_names_metrics_that_the_eye_exports() {
    let app = TestApp::start().await;
    let (_, exposition) = crate::metrics::drive_traffic(&app).await;
    let used = dashboard_prometheus_metric_names();
    assert!(
        used.len() >= 15,
        "only {} metric names found: {used:?}",
        used.len()
    );
    assert_exported(&used, &exposition.names());
}

#[test]
fn the_exported_name_check_refuses_unknown_names() {
    let exported: BTreeSet<String> = ["the_eye_events_received_total".to_owned()].into();
    let used = BTreeMap::from([(
        "the_eye_events_recieved_total".to_owned(),
        "a panel".to_owned(),
    )]);
    let refused = std::panic::catch_unwind(|| assert_exported(&used, &exported));
    assert!(refused.is_err());
}
