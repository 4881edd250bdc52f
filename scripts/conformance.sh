#!/usr/bin/env bash
# OpenStack's conformance suite (tempest + octavia-tempest-plugin) against quadriga with a real Keystone
# (see scripts/conformance.py):  scripts/conformance.sh install | run [--regex R] [--no-noop] [--dir DIR]
# quadriga serve runs with $QUADRIGA_PYTHON (default: the repository's .venv) and this checkout's sources.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
exec "${QUADRIGA_PYTHON:-$repo/.venv/bin/python}" "$repo/scripts/conformance.py" "$@"
