#!/usr/bin/env bash
# Starts The Eye's ClickHouse devserver (development and tests only; see README.md).
#
#   run.sh --host H --port P --data DIR [--exit-with-parent [--parent-pid PID]]
#
# On first use it creates a virtualenv with the pinned requirements in
#   ${THE_EYE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/the-eye}/devserver-venv-<hash>
# where <hash> is the first 12 hex digits of requirements.txt's sha256, so a change of
# pins gets a fresh virtualenv. The virtualenv is built in a temporary directory and
# renamed into place under a lock, so concurrent first runs neither race nor leave a
# half-built one behind. Then it execs the server, so this script's PID is the server's.
#
# Environment: DEVSERVER_PYTHON (default python3) is the interpreter the virtualenv is
# built from.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
requirements="$here/requirements.txt"
cache_dir="${THE_EYE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/the-eye}"
hash="$(sha256sum "$requirements" | cut -c1-12)"
venv="$cache_dir/devserver-venv-$hash"

if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$cache_dir"
    exec 9>"$cache_dir/devserver-venv.lock"
    flock 9
    # Another run may have built it while we waited for the lock.
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "devserver: creating virtualenv $venv (first run; this takes a while)" >&2
        tmp="$(mktemp -d "$cache_dir/.devserver-venv-tmp.XXXXXX")"
        chmod 755 "$tmp"  # mktemp makes it private; the cache may be shared
        trap 'rm -rf "$tmp"' EXIT
        "${DEVSERVER_PYTHON:-python3}" -m venv "$tmp"
        "$tmp/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
            -r "$requirements" >&2
        # Prove the install works before publishing it.
        "$tmp/bin/python" -c 'import chdb.session, lz4.block, lz4.frame, clickhouse_cityhash.cityhash'
        # A virtualenv's scripts embed its path, but the server is started as
        # `$venv/bin/python server.py`, which works from any location.
        # A leftover whose interpreter is gone (e.g. Python was upgraded) is replaced.
        rm -rf "$venv"
        mv -T "$tmp" "$venv"
        trap - EXIT
    fi
    flock -u 9
    exec 9>&-
fi

exec "$venv/bin/python" "$here/server.py" "$@"
