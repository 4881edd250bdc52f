#!/usr/bin/env bash
# Start (or stop) a private PostgreSQL server for the tests, on loopback, in a directory of its own.
# Usage: scripts/pg.sh start DIR PORT   -> prints the database URL
#        scripts/pg.sh stop DIR
set -euo pipefail
action=$1 dir=$2
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bindir" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case $action in
  start)
    port=$3
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_pg "$bindir/initdb" -D "$dir/data" -U quadriga --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
    as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o "-h 127.0.0.1 -p $port -k $dir -F" start >/dev/null
    as_pg "$bindir/createdb" -h 127.0.0.1 -p "$port" -U quadriga quadriga
    echo "postgresql://quadriga@127.0.0.1:$port/quadriga"
    ;;
  stop)
    [ -d "$dir/data" ] && as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
esac
