#!/usr/bin/env bash
# Static checks of the monitoring and deployment files, run by scripts/test:
#   - Prometheus: the scrape config (with the rule files it names), the alert rules, and
#     the alerts' unit tests (prometheus/alerts.test.yml);
#   - docker-compose.yml and docker-compose.cluster.yml: parsed and validated by docker-compose;
#   - nginx/the-eye.conf (the load balancer of docker-compose.cluster.yml): `nginx -t`, with it
#     included in an `http` block as the nginx image's own nginx.conf includes conf.d/*.conf;
#     every upstream server must be a service of the compose file;
#   - ClickHouse server and Keeper config fragments: well-formed XML with a <clickhouse> root
#     (ClickHouse's own parser does not install here: Debian's clickhouse-server is 18.16).
# That covers every configuration file the compose files mount: prometheus/ (promtool),
# nginx/ (nginx), clickhouse/ (XML); grafana/ is checked by tests/it/dashboards.rs.
# The Grafana dashboards and the metric names used by alerts and dashboards are checked by
# the Rust integration tests (tests/it/dashboards.rs, tests/it/alerts.rs), against a live
# /metrics and a seeded ClickHouse.
#
# Missing tools fail the check rather than skipping it: .ci/run installs them (Debian's
# `prometheus` package brings promtool, `docker-compose` parses compose files without a
# Docker engine, `nginx` brings nginx; scripts/setup-tests installs them).
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
# Debian installs nginx in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin"
require nginx "apt-get install nginx"

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

echo "Checking nginx/the-eye.conf (nginx -t)"
# The upstream servers are compose services, whose names resolve only inside the compose
# network: each must be a service of docker-compose.cluster.yml, and is given a loopback
# address for the check (nginx -t resolves upstream names). Nothing else is changed.
services="$(CLICKHOUSE_PASSWORD=check-only GRAFANA_ADMIN_PASSWORD=check-only \
    docker-compose -f docker-compose.cluster.yml config --services)"
upstreams="$(sed -nE 's/^[[:space:]]*server[[:space:]]+([A-Za-z0-9._-]+):[0-9]+.*/\1/p' nginx/the-eye.conf)"
[ -n "$upstreams" ] || { echo "nginx/the-eye.conf: no upstream server found" >&2; exit 1; }
for upstream in $upstreams; do
  if ! grep -qx "$upstream" <<<"$services"; then
    echo "nginx/the-eye.conf: upstream server $upstream is not a service of docker-compose.cluster.yml" >&2
    exit 1
  fi
done
nginx_dir="$(mktemp -d)"
trap 'rm -rf "$nginx_dir"' EXIT
sed -E 's/^([[:space:]]*server[[:space:]]+)[A-Za-z0-9._-]+:/\1127.0.0.1:/' nginx/the-eye.conf \
  > "$nginx_dir/default.conf"
cat > "$nginx_dir/nginx.conf" <<NGINX
pid $nginx_dir/nginx.pid;
error_log stderr;
events {}
http {
    include /etc/nginx/mime.types;
    include $nginx_dir/default.conf;
}
NGINX
nginx -t -q -p "$nginx_dir" -c "$nginx_dir/nginx.conf"
echo "  SUCCESS"

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
