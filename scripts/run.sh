#!/usr/bin/env bash
# Install quadriga if needed and run `quadriga demo`: the APIs, the controller, an agent with its HAProxy
# engines, three backends and a load balancer carrying traffic, until Ctrl-C. Extra flags go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/quadriga demo "$@"
