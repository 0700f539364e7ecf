#!/usr/bin/env bash
# Static checks of the monitoring and deployment files, run by scripts/test:
#   - Prometheus: the scrape config (with the rule files it names), the alert rules, and
#     the alerts' unit tests (prometheus/alerts.test.yml);
#   - docker-compose.yml and docker-compose.cluster.yml: parsed and validated by docker-compose;
#   - ClickHouse server and Keeper config fragments: well-formed XML.
# The Grafana dashboards and the metric names used by alerts and dashboards are checked by
# the Rust integration tests (tests/it/dashboards.rs, tests/it/alerts.rs), against a live
# /metrics and a seeded ClickHouse.
#
# Missing tools fail the check rather than skipping it: .ci/run installs them (Debian's
# `prometheus` package brings promtool, `docker-compose` parses compose files without a
# Docker engine).
set -euo pipefail
cd "$(dirname "$0")/.."

require() {
  if ! command -v "$1" >/dev/null; then
    echo "prometheus/check.sh: $1 is required: $2" >&2
    exit 1
  fi
}
require promtool "apt-get install prometheus"
require docker-compose "apt-get install docker-compose"
require python3 "apt-get install python3"

promtool check config prometheus/prometheus.yml
promtool check config prometheus/prometheus.cluster.yml
promtool check rules prometheus/alerts.yml
promtool test rules prometheus/alerts.test.yml

# The compose files have no default passwords: checked with throwaway ones, and checked to
# refuse to start without them.
for file in docker-compose.yml docker-compose.cluster.yml; do
    echo "Checking $file"
    CLICKHOUSE_PASSWORD=check-only GRAFANA_ADMIN_PASSWORD=check-only \
        docker-compose -f "$file" config --quiet
    for unset in CLICKHOUSE_PASSWORD GRAFANA_ADMIN_PASSWORD; do
        if (export CLICKHOUSE_PASSWORD=check-only GRAFANA_ADMIN_PASSWORD=check-only
            unset "$unset"
            docker-compose -f "$file" config --quiet) 2>/dev/null; then
            echo "$file starts without $unset; it must refuse (\${$unset:?…})" >&2
            exit 1
        fi
    done
    echo "  SUCCESS"
done

echo "Checking clickhouse/server-config/*.xml clickhouse/cluster/*.xml"
python3 - clickhouse/server-config/*.xml clickhouse/cluster/*.xml <<'PY'
import sys
import xml.etree.ElementTree as ElementTree

for path in sys.argv[1:]:
    root = ElementTree.parse(path).getroot()
    if root.tag != "clickhouse":
        sys.exit(f"{path}: the root element must be <clickhouse>, not <{root.tag}>")
PY
echo "  SUCCESS"
