//! The deployment files agree with the code and with each other, checked without Docker
//! (`prometheus/check.sh` has `docker-compose config` validate the compose file itself):
//! - `the-eye healthcheck`, the container health check, reports a ready instance, a wrong
//!   path and an unreachable one;
//! - the compose file's `THE_EYE_*` variables are settings The Eye accepts (the binary loads
//!   them), its ports are the ones The Eye, the Dockerfile, Prometheus and Grafana use, and
//!   every file it mounts exists;
//! - the Grafana plugin version installed is the one the dashboards are written for.

use std::collections::BTreeMap;
use std::process::Output;

use serde_yaml::Value;

use crate::common::TestApp;
use crate::dashboards::{dashboards, panels, repository};

/// Runs the `the-eye` binary with only `env` (and PATH). Asynchronously: the instance it
/// talks to runs on this test's runtime.
async fn the_eye(args: &[&str], env: &BTreeMap<String, String>) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_the-eye"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .await
        .expect("the-eye runs")
}

fn port_of(url: &str) -> String {
    url.rsplit(':').next().unwrap().to_owned()
}

fn compose() -> Value {
    let text = std::fs::read_to_string(repository().join("docker-compose.yml")).unwrap();
    serde_yaml::from_str(&text).expect("docker-compose.yml parses")
}

/// `${NAME:-default}` → `default`, as compose interpolates it when NAME is unset.
fn interpolate_defaults(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn service_environment(compose: &Value, service: &str) -> BTreeMap<String, String> {
    compose["services"][service]["environment"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{service} has an environment mapping"))
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::String(text) => text.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
            };
            (
                key.as_str().unwrap().to_owned(),
                interpolate_defaults(&value),
            )
        })
        .collect()
}

fn published_ports(compose: &Value, service: &str) -> Vec<String> {
    compose["services"][service]["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|port| port.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn healthcheck_reports_ready_wrong_path_and_unreachable() {
    let app = TestApp::start().await;
    let port = port_of(&app.url);
    let env = BTreeMap::from([(
        "THE_EYE_SERVER_LISTEN_ADDR".to_owned(),
        format!("0.0.0.0:{port}"),
    )]);
    let output = the_eye(&["healthcheck"], &env).await;
    assert!(output.status.success(), "{output:?}");

    let output = the_eye(&["healthcheck", "--path", "/no/such/path"], &env).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("404"),
        "{output:?}"
    );

    // A port nothing listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let env = BTreeMap::from([("THE_EYE_SERVER_LISTEN_ADDR".to_owned(), closed.to_string())]);
    let output = the_eye(&["healthcheck"], &env).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
}

#[tokio::test]
async fn the_compose_environment_is_configuration_the_eye_accepts() {
    let compose = compose();
    let mut env = service_environment(&compose, "the-eye");
    for key in env.keys() {
        let section = key
            .strip_prefix("THE_EYE_")
            .and_then(|rest| rest.split('_').next())
            .unwrap_or_else(|| panic!("{key} is not a THE_EYE_ setting"));
        assert!(
            ["SERVER", "CLICKHOUSE", "INGEST", "PIPELINE"].contains(&section),
            "{key}: unknown section {section}"
        );
    }
    assert_eq!(env["THE_EYE_SERVER_LISTEN_ADDR"], "0.0.0.0:8000");
    assert_eq!(env["THE_EYE_CLICKHOUSE_URL"], "http://clickhouse:8123");
    // The API on loopback only; the metrics port reachable on the compose network alone.
    assert_eq!(
        published_ports(&compose, "the-eye"),
        ["127.0.0.1:8000:8000"]
    );
    assert_eq!(env["THE_EYE_SERVER_METRICS_LISTEN_ADDR"], "0.0.0.0:9464");
    assert!(published_ports(&compose, "clickhouse")
        .iter()
        .any(|port| port.ends_with(":8123")));

    let dockerfile = std::fs::read_to_string(repository().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("EXPOSE 8000"), "Dockerfile");
    assert!(
        dockerfile.contains("THE_EYE_SERVER_LISTEN_ADDR=0.0.0.0:8000"),
        "Dockerfile"
    );
    assert!(
        dockerfile.contains("cargo build --release --locked -p the-eye"),
        "Dockerfile"
    );
    // The default schema directory is in the build tree, which the runtime image lacks: the
    // image must ship the schemas and point at them, or the service would not start.
    assert!(
        dockerfile.contains("COPY schemas /etc/the-eye/schemas")
            && dockerfile.contains("THE_EYE_INGEST_SCHEMAS_DIR=/etc/the-eye/schemas"),
        "Dockerfile ships the payload schemas"
    );

    // The binary loads exactly these variables (a bad key or value exits 2 before anything
    // else); the health check then reaches a running instance at the configured port.
    let app = TestApp::start().await;
    env.insert(
        "THE_EYE_SERVER_LISTEN_ADDR".to_owned(),
        format!("0.0.0.0:{}", port_of(&app.url)),
    );
    let output = the_eye(&["healthcheck"], &env).await;
    assert!(output.status.success(), "{output:?}");

    // …and that check can fail: a misspelt key is refused.
    env.insert(
        "THE_EYE_CLICKHOUSE_URLL".to_owned(),
        "http://clickhouse:8123".to_owned(),
    );
    let output = the_eye(&["healthcheck"], &env).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("url"),
        "{output:?}"
    );
}

/// `docker-compose.yml`'s services have a health check, restart unless stopped, pin their
/// image versions, and mount only files and directories that exist in the repository.
#[test]
fn compose_services_are_pinned_healthy_restarting_and_mount_existing_files() {
    let compose = compose();
    let services = compose["services"].as_mapping().unwrap();
    for service in ["clickhouse", "the-eye", "prometheus", "grafana"] {
        let definition = &compose["services"][service];
        assert!(services.contains_key(service), "no service {service}");
        assert!(
            definition["healthcheck"]["test"].is_sequence(),
            "{service} has no health check"
        );
        assert_eq!(definition["restart"], "unless-stopped", "{service}");
        if let Some(image) = definition["image"].as_str() {
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(
                !tag.is_empty() && tag != "latest",
                "{service}: pin the image version ({image})"
            );
        }
        // Every file or directory mounted from the repository exists.
        for volume in definition["volumes"].as_sequence().into_iter().flatten() {
            let volume = volume.as_str().unwrap();
            if let Some(relative) = volume.strip_prefix("./") {
                let source = relative.split(':').next().unwrap();
                assert!(
                    repository().join(source).exists(),
                    "{service} mounts missing {source}"
                );
            }
        }
    }
}

/// Prometheus scrapes The Eye and ClickHouse where compose runs them, ClickHouse exports on
/// the port scraped, and compose publishes ClickHouse's, Prometheus's and Grafana's ports.
#[test]
fn prometheus_scrapes_the_eye_and_clickhouse_where_compose_runs_them() {
    let compose = compose();
    let prometheus: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repository().join("prometheus/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let targets: BTreeMap<String, Vec<String>> = prometheus["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|job| {
            let targets = job["static_configs"][0]["targets"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|target| target.as_str().unwrap().to_owned())
                .collect();
            (job["job_name"].as_str().unwrap().to_owned(), targets)
        })
        .collect();
    assert_eq!(targets["the-eye"], ["the-eye:9464"]);
    assert_eq!(targets["clickhouse"], ["clickhouse:9363"]);
    let clickhouse_config =
        std::fs::read_to_string(repository().join("clickhouse/server-config/prometheus.xml"))
            .unwrap();
    assert!(clickhouse_config.contains("<port>9363</port>"));
    assert!(published_ports(&compose, "clickhouse")
        .iter()
        .any(|port| port.ends_with(":9363")));
    assert!(published_ports(&compose, "prometheus")
        .iter()
        .any(|port| port.ends_with(":9090")));
    assert!(published_ports(&compose, "grafana").contains(&"127.0.0.1:3000:3000".to_owned()));
}

/// Grafana's datasources point at the compose services, with The Eye's database and user.
#[test]
fn grafana_datasources_point_at_the_compose_services_and_the_eyes_database() {
    let compose = compose();
    let datasources: Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            repository().join("grafana/provisioning/datasources/datasources.yml"),
        )
        .unwrap(),
    )
    .unwrap();
    let the_eye_env = service_environment(&compose, "the-eye");
    for datasource in datasources["datasources"].as_sequence().unwrap() {
        match datasource["type"].as_str().unwrap() {
            "grafana-clickhouse-datasource" => {
                assert_eq!(datasource["jsonData"]["host"], "clickhouse");
                assert_eq!(datasource["jsonData"]["port"].as_u64(), Some(8123));
                assert_eq!(datasource["jsonData"]["protocol"], "http");
                assert_eq!(
                    datasource["jsonData"]["defaultDatabase"].as_str(),
                    Some(the_eye_env["THE_EYE_CLICKHOUSE_DATABASE"].as_str())
                );
                assert_eq!(
                    datasource["jsonData"]["username"].as_str(),
                    Some(the_eye_env["THE_EYE_CLICKHOUSE_USER"].as_str())
                );
            }
            "prometheus" => assert_eq!(datasource["url"], "http://prometheus:9090"),
            other => panic!("unexpected datasource type {other}"),
        }
    }
}

/// Grafana's dashboards provider reads the directory compose mounts the dashboards into.
#[test]
fn the_dashboards_provider_reads_the_directory_compose_mounts() {
    let compose = compose();
    let provider: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repository().join("grafana/provisioning/dashboards/the-eye.yml"))
            .unwrap(),
    )
    .unwrap();
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let grafana_volumes: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|volume| volume.as_str().unwrap())
        .collect();
    assert!(
        grafana_volumes
            .iter()
            .any(|volume| volume.starts_with(&format!("./grafana/dashboards:{path}"))),
        "{grafana_volumes:?} does not mount grafana/dashboards at {path}"
    );
}

/// The ClickHouse plugin Grafana installs is the version the dashboards' targets name.
#[test]
fn the_installed_clickhouse_plugin_is_the_version_the_dashboards_name() {
    let compose = compose();
    let grafana_env = service_environment(&compose, "grafana");
    let installed = grafana_env["GF_PLUGINS_PREINSTALL_SYNC"]
        .strip_prefix("grafana-clickhouse-datasource@")
        .expect("the ClickHouse plugin, pinned");
    for (file, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if target["datasource"]["type"] == "grafana-clickhouse-datasource" {
                    assert_eq!(
                        target["pluginVersion"], installed,
                        "{file}: {}",
                        panel["title"]
                    );
                }
            }
        }
    }
}

/// Issue 28, item 12: no compose file has a default for a secret — each use is
/// `${VAR:?message}`, so compose refuses to start without it — and Grafana and ClickHouse
/// (like everything else) are published on 127.0.0.1 only.
#[test]
fn compose_files_have_no_default_secrets_and_publish_on_loopback_only() {
    for file in ["docker-compose.yml", "docker-compose.cluster.yml"] {
        let text = std::fs::read_to_string(repository().join(file)).unwrap();
        for secret in ["CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD"] {
            let uses: Vec<&str> = text
                .match_indices(&format!("${{{secret}"))
                .map(|(at, _)| &text[at..at + text[at..].find('}').unwrap() + 1])
                .collect();
            assert!(!uses.is_empty(), "{file} does not use {secret}");
            for used in uses {
                assert!(
                    used.starts_with(&format!("${{{secret}:?")),
                    "{file}: {used} must be ${{{secret}:?message}}"
                );
            }
        }
        let compose: Value = serde_yaml::from_str(&text).unwrap();
        for (name, service) in compose["services"].as_mapping().unwrap() {
            for port in service["ports"].as_sequence().into_iter().flatten() {
                let port = port.as_str().unwrap();
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "{file}: {name:?} publishes {port} beyond the host"
                );
            }
        }
    }
}
