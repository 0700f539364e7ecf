#!/usr/bin/env bash
# Static checks of the monitoring files, run by scripts/test: the Prometheus scrape config
# (with the rule files it names), the alert rules, and the alerts' unit tests
# (prometheus/alerts.test.yml).
# The Grafana dashboards and the metric names used by alerts and dashboards are checked by
# the Rust integration tests (tests/it/dashboards.rs, tests/it/alerts.rs), against a live
# /metrics and a seeded ClickHouse.
#
# Missing tools fail the check rather than skipping it: .ci/run installs them (Debian's
# `prometheus` package brings promtool).
set -euo pipefail
cd "$(dirname "$0")/.."

require() {
  if ! command -v "$1" >/dev/null; then
    echo "prometheus/check.sh: $1 is required: $2" >&2
    exit 1
  fi
}
require promtool "apt-get install prometheus"

promtool check config prometheus/prometheus.yml
promtool check rules prometheus/alerts.yml
promtool test rules prometheus/alerts.test.yml

