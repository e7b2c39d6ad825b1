#!/bin/bash
# Stop the PostgreSQL server of .ci/postgres-start.sh (fast shutdown: open sessions
# are rolled back) and wait until it is gone. Idempotent: no cluster or a stopped one
# is fine. The data stays in FE_POSTGRES_DIR (the next start reuses it).
set -euo pipefail

D=${FE_POSTGRES_DIR:-/var/tmp/fe-postgres}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] && [ -f "$D/data/PG_VERSION" ] || exit 0
[ -f "$D/data/postmaster.pid" ] || exit 0
pid=$(head -n 1 "$D/data/postmaster.pid")
state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
if [ -z "$state" ] || [ "${state:0:1}" = Z ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != postgres ]; then
    # Left by a killed server (a zombie counts as gone): the next start must not see them.
    rm -f "$D/data/postmaster.pid" "$D"/.s.PGSQL.*
    exit 0
fi
runuser -u postgres -- "$bin/pg_ctl" -D "$D/data" stop -m fast -t 30 >/dev/null \
    || { echo "postgres-stop: the server in $D did not stop within 30 s; see $D/postgres.log" >&2; exit 1; }
