//! The alert rules in `prometheus/alerts.yml`, beyond what `promtool` checks
//! (`prometheus/check.sh` runs `promtool check rules` and the unit tests):
//! - every alert the issue asks for exists, with a summary, a description and a runbook link
//!   to its own section of the Runbook (`docs/on-call.md`);
//! - `prometheus/alerts.test.yml` has, for every alert, a case where it fires and one where it
//!   must not;
//! - every expression names only metrics that The Eye's `/metrics` exports after traffic.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::TestApp;
use crate::dashboards::{assert_exported, promql, repository};

/// The document holding the Runbook, relative to the repository, as every alert's
/// `runbook_url` names it.
const RUNBOOK: &str = "docs/on-call.md";

fn yaml(path: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(repository().join(path)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Every alerting rule of alerts.yml.
fn alerts() -> Vec<serde_yaml::Value> {
    let rules = yaml("prometheus/alerts.yml");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("rules").clone())
        .filter(|rule| rule["alert"].is_string())
        .collect()
}

fn name(rule: &serde_yaml::Value) -> String {
    rule["alert"].as_str().unwrap().to_owned()
}

#[test]
fn every_alert_has_annotations_and_a_runbook_section() {
    let alerts = alerts();
    let names: BTreeSet<String> = alerts.iter().map(name).collect();
    for required in [
        "TheEyeDown",
        "TheEyeIngestionStopped",
        "TheEyeRejectionRatioHigh",
        "TheEyeClickHouseInsertsFailing",
        "TheEyeQueueNearlyFull",
        "TheEyeAnswerLatencyHigh",
        "TheEyeSpoolFilling",
        "TheEyeSpoolBacklogOld",
    ] {
        assert!(
            names.contains(required),
            "{required} is missing from alerts.yml"
        );
    }
    let on_call = std::fs::read_to_string(repository().join(RUNBOOK)).unwrap();
    let runbook = on_call
        .split("\n## Runbook\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{RUNBOOK} has a `## Runbook` section"));
    let runbook = runbook.split("\n## ").next().unwrap();
    let sections: BTreeSet<&str> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix("### "))
        .map(str::trim)
        .collect();
    for rule in &alerts {
        let alert = name(rule);
        let annotations = &rule["annotations"];
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                annotations[key]
                    .as_str()
                    .is_some_and(|text| !text.trim().is_empty()),
                "{alert} has no {key}"
            );
        }
        assert!(
            rule["labels"]["severity"].is_string(),
            "{alert} has no severity"
        );
        assert_eq!(
            annotations["runbook_url"].as_str().unwrap(),
            format!("{RUNBOOK}#{}", alert.to_lowercase()),
            "{alert}: the runbook link must point at its section of {RUNBOOK}"
        );
        assert!(
            sections.contains(alert.as_str()),
            "{RUNBOOK}'s Runbook has no `### {alert}`"
        );
        let section = runbook.split(&format!("### {alert}\n")).nth(1).unwrap();
        let section = section.split("\n### ").next().unwrap();
        for part in ["**Means**", "**Confirm**", "**Do**"] {
            assert!(
                section.contains(part),
                "Runbook section {alert} lacks {part}"
            );
        }
    }
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let tests = yaml("prometheus/alerts.test.yml");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let alert = case["alertname"].as_str().unwrap().to_owned();
            match case["exp_alerts"].as_sequence() {
                Some(expected) if !expected.is_empty() => firing.insert(alert),
                _ => quiet.insert(alert),
            };
        }
    }
    for alert in alerts().iter().map(name) {
        assert!(firing.contains(&alert), "no test where {alert} fires");
        assert!(quiet.contains(&alert), "no test where {alert} stays quiet");
    }
}

#[tokio::test]
async fn every_alert_expression_names_metrics_that_the_eye_exports() {
    let app = TestApp::start().await;
    let (_, exposition) = crate::metrics::drive_traffic(&app).await;
    let mut used = BTreeMap::new();
    for rule in alerts() {
        for metric in promql::metric_names(rule["expr"].as_str().expect("expr")) {
            used.insert(metric, format!("alert {}", name(&rule)));
        }
    }
    assert!(used.len() >= 8, "{used:?}");
    assert_exported(&used, &exposition.names());
}
