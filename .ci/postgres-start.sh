#!/bin/bash
# Start a PostgreSQL server for the StateStore contract suite (marker `postgres`):
# a cluster in FE_POSTGRES_DIR (default /var/tmp/fe-postgres) owned by the postgres
# user, listening on 127.0.0.1:FE_POSTGRES_PORT (default 55432) and on a unix socket
# in that directory, with the login role fe (password fe) owning the UTF-8 database
# fe_test. Needs Debian's postgresql package (its binaries are in
# /usr/lib/postgresql/VERSION/bin); installs nothing. No systemd: pg_ctl runs the
# server. Idempotent: a running server is left alone (role and database are still
# ensured); a half-made cluster is made anew. Readiness is polled with a timeout.
# Prints the DSN the tests read from FE_TEST_POSTGRES_DSN. Stop with .ci/postgres-stop.sh.
set -euo pipefail

D=${FE_POSTGRES_DIR:-/var/tmp/fe-postgres}
PORT=${FE_POSTGRES_PORT:-55432}
DATA=$D/data
DSN="postgresql://fe:fe@127.0.0.1:$PORT/fe_test"

fail() { echo "postgres-start: $*" >&2; exit 1; }
say() { echo "postgres-start: $*"; }

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] && [ -x "$bin/initdb" ] || fail "no PostgreSQL server found in /usr/lib/postgresql/*/bin; apt-get install postgresql"
id postgres >/dev/null 2>&1 || fail "no postgres user; apt-get install postgresql"
as_pg() { runuser -u postgres -- "$@"; }
psql_admin() { as_pg "$bin/psql" -h "$D" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alive: the pid file names a live postgres process (a zombie counts as dead: a killed
# server lingers as one until PID 1 reaps it, and pg_ctl would still call it running).
alive() {
    local pid state
    [ -f "$DATA/postmaster.pid" ] || return 1
    pid=$(head -n 1 "$DATA/postmaster.pid")
    state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    [ -n "$state" ] && [ "${state:0:1}" != Z ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ]
}

if alive; then
    say "already running in $D"
else
    if [ ! -f "$DATA/PG_VERSION" ]; then
        rm -rf "$D"
        mkdir -p "$D"
        chown postgres:postgres "$D"
        chmod 0700 "$D"
        # Local (socket) connections trust the OS user; TCP needs the role's password.
        as_pg "$bin/initdb" -D "$DATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=scram-sha-256 >"$D/initdb.log" 2>&1 \
            || fail "initdb failed; see $D/initdb.log"
    fi
    port_taken "$PORT" && fail "127.0.0.1:$PORT is taken by another process; stop it or set FE_POSTGRES_PORT"
    # A server killed with SIGKILL leaves its pid file and its socket's lock file; the
    # server refuses to start while the pid they name looks alive (a zombie does). It
    # recovers from its WAL on start.
    rm -f "$DATA/postmaster.pid" "$D/.s.PGSQL.$PORT.lock" "$D/.s.PGSQL.$PORT"
    as_pg "$bin/pg_ctl" -D "$DATA" -l "$D/postgres.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $D" start >/dev/null \
        || fail "the server did not start within 30 s; see $D/postgres.log"
fi

deadline=$(( $(date +%s) + 30 ))
until as_pg "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT" -d postgres; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "the server did not answer on 127.0.0.1:$PORT within 30 s; see $D/postgres.log"
    sleep 0.1
done

psql_admin <<SQL
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fe') THEN
        CREATE ROLE fe LOGIN PASSWORD 'fe';
    END IF;
END \$\$;
SQL
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'fe_test'")" ]; then
    psql_admin -c "CREATE DATABASE fe_test OWNER fe ENCODING 'UTF8' TEMPLATE template0"
fi
say "ready: FE_TEST_POSTGRES_DSN=$DSN"
