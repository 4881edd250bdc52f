#!/usr/bin/env bash
# Install quadriga if needed and start it: `quadriga serve` with any extra flags you pass.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/quadriga serve "$@"
