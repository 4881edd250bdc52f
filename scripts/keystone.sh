#!/usr/bin/env bash
# A real Keystone for tests and local clouds (see scripts/keystone_ctl.py for what it creates).
#   scripts/keystone.sh install                       only make its virtualenv (idempotent)
#   scripts/keystone.sh start DIR [--port 5000] [--load-balancer URL --network URL --key-manager URL]
#   scripts/keystone.sh stop DIR
#   scripts/keystone.sh setup|serve|populate DIR ...  the steps of `start`, one at a time
# Keystone runs from its own virtualenv, $QUADRIGA_KEYSTONE_VENV (default .cache/keystone-venv in the
# repository), never from quadriga's .venv: its dependencies (oslo.*, SQLAlchemy pins) are its own.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${QUADRIGA_KEYSTONE_VENV:-$repo/.cache/keystone-venv}
# The versions that were tested; a venv made with other pins is remade.
pins="keystone==30.0.0 gunicorn==27.0.1"

# One installer at a time: `scripts/test.sh` installs in the background while the tests that need Keystone
# (which call this script too) wait here until it is done.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.installed" ] || [ "$(cat "$venv/.installed")" != "$pins" ]; then
  python=${PYTHON:-python3}
  echo "==> installing Keystone into $venv ($pins)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q $pins >&2
  echo "$pins" > "$venv/.installed"
fi
flock -u 9

if [ "${1:-}" = install ]; then
  echo "$venv"
  exit 0
fi
exec "$venv/bin/python" "$repo/scripts/keystone_ctl.py" "$@"
