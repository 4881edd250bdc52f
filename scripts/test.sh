#!/usr/bin/env bash
# Install everything the tests need and run them: lint, the whole suite on SQLite, then the API suite and
# the parts that write concurrently (health, failover, chaos) again on PostgreSQL. Exits non-zero on any
# failure (also when pytest collects no tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
# A real Keystone for tests/keystone, in its own virtualenv (a no-op when it is already there), installed in
# the background while the first tests run; tests/keystone waits for it (scripts/keystone.sh holds a lock).
keystone_log=$(mktemp /tmp/quadriga-keystone-install.XXXXXX)
scripts/keystone.sh install >"$keystone_log" 2>&1 &
keystone_install=$!
# The same for the real Octavia that tests/conformance runs side by side.
peer_log=$(mktemp /tmp/quadriga-octavia-install.XXXXXX)
scripts/octavia-peer.sh install >"$peer_log" 2>&1 &
peer_install=$!
. .venv/bin/activate

echo "==> ruff"
ruff check src tests bench
ruff format --check src tests bench

pgdir=$(mktemp -d /tmp/quadriga-pg.XXXXXX)
trap 'scripts/pg.sh stop "$pgdir"' EXIT
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pg_url=$(scripts/pg.sh start "$pgdir" "$port")

echo "==> pytest (SQLite)"
pytest -q -p no:cacheprovider tests
if ! wait "$keystone_install"; then
  echo "Keystone's virtualenv could not be installed:" >&2
  cat "$keystone_log" >&2
  exit 1
fi
rm -f "$keystone_log"
if ! wait "$peer_install"; then
  echo "the Octavia peer's virtualenv could not be installed:" >&2
  cat "$peer_log" >&2
  exit 1
fi
rm -f "$peer_log"
echo "==> pytest on PostgreSQL: the API, the clients, the secret store, the health recorder and watchdog, basic, failover and pair e2e, chaos"
# The role matrix (tests/api/test_rbac.py) decides from the token alone; it runs once, on SQLite.
QUADRIGA_TEST_DATABASE_URL=$pg_url QUADRIGA_TEST_SERVER_DATABASE=postgresql \
  pytest -q -p no:cacheprovider --ignore tests/api/test_rbac.py tests/api tests/clients tests/keymanager/test_api.py tests/e2e/test_basics.py tests/e2e/test_tls.py \
  tests/health/test_recorder.py tests/health/test_recorder_locks.py \
  tests/health/test_failover_watchdog.py tests/health/test_health_command.py \
  tests/e2e/test_auto_failover.py tests/e2e/test_active_standby.py tests/chaos
