#!/usr/bin/env bash
# Install quadriga into ./.venv (and the Debian packages it needs, when run as root).
# Usage: scripts/install.sh [--test]    (--test also installs what the test suite needs)
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

apt_install() {
  # Only as root on a Debian/Ubuntu machine; elsewhere the packages must already be there.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if [ ${#missing[@]} -gt 0 ]; then
      echo "==> apt-get install ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
  fi
}

# HAProxy runs the engines; iproute2 builds the netns network; ping serves PING health monitors; keepalived
# moves the VIP of ACTIVE_STANDBY pairs. The agent runs its own keepalived per engine, so when this script
# installs the package it disables Debian's keepalived service (a keepalived installed before is left as it
# was); /etc/keepalived is never touched.
had_keepalived=0
dpkg -s keepalived >/dev/null 2>&1 && had_keepalived=1
apt_install python3 python3-venv python3-pip haproxy iproute2 iputils-ping keepalived
if [ $had_keepalived = 0 ] && [ "$(id -u)" = 0 ] && dpkg -s keepalived >/dev/null 2>&1; then
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now keepalived >/dev/null 2>&1 || true
  elif command -v update-rc.d >/dev/null; then
    update-rc.d keepalived disable >/dev/null 2>&1 || true
  fi
fi
# The TLS tests also use `openssl s_client` as a client.
[ $want_tests = 1 ] && apt_install postgresql openssl
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  echo "warning: HAProxy is not installed and engines cannot run: apt-get install haproxy (as root)" >&2
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($python --version)"
  $python -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ $want_tests = 1 ]; then
  echo "==> pip install -e .[test]"
  .venv/bin/python -m pip install -q -e ".[test]"
else
  echo "==> pip install -e ."
  .venv/bin/python -m pip install -q -e .
fi
echo "==> installed: $(.venv/bin/quadriga --help | head -1)"
