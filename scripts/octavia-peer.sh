#!/usr/bin/env bash
# Run the real Octavia API locally as a reference peer (see scripts/octavia_peer.py):
#   scripts/octavia-peer.sh install | start DIR [--port N] [--no-activator] | stop DIR
set -euo pipefail
exec python3 "$(dirname "$0")/octavia_peer.py" "$@"
