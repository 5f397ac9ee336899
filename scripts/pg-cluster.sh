#!/usr/bin/env bash
# pg-cluster.sh: start and stop a throwaway PostgreSQL 15 cluster for the demo and the benchmark.
#
#   scripts/pg-cluster.sh start DIR PORT   initdb DIR/data if needed, start it, wait until ready
#   scripts/pg-cluster.sh stop DIR         stop it (fast shutdown); nothing to do if not running
#   scripts/pg-cluster.sh status DIR       exit 0 if running
#   scripts/pg-cluster.sh psql DIR PORT [psql args...]   psql as superuser over the unix socket
#
# The cluster listens on 127.0.0.1:PORT (scram-sha-256 for TCP) and on a unix socket in DIR
# (trust, for the postgres superuser only). Role `app` (LOGIN, CREATEDB) gets the password in
# env PGAPP_PASSWORD (required by start). Extra postgresql.conf lines come from env PGCLUSTER_CONF
# (newline separated, e.g. "max_connections = 1100"); they are rewritten on every start.
# initdb refuses root, so the server runs as the `postgres` system user and DIR is chowned to it.
# Logs go to DIR/postgres.log. It leaves databases and data to its callers.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGUSER_OS=${PGUSER_OS:-postgres}

die() { echo "pg-cluster: $*" >&2; exit 2; }

# Run a command as the postgres OS user (or directly when we already are not root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi
}

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd); }

cluster_running() {
  local dir=$1
  [ -f "$dir/data/PG_VERSION" ] && as_pg "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

cluster_init() {
  local dir=$1
  [ -f "$dir/data/PG_VERSION" ] && return 0
  rm -rf "$dir/data"
  as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed (log: $dir/initdb.log)"; }
  # Only the superuser may use the trusted unix socket; everything else goes over TCP + SCRAM.
  as_pg tee "$dir/data/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       postgres                 trust
local   all       all                      scram-sha-256
host    all       all       127.0.0.1/32   scram-sha-256
host    all       all       ::1/128        scram-sha-256
EOF
}

cluster_write_conf() {
  local dir=$1 port=$2
  # postgresql.auto.conf-like include file owned by this script, rewritten every start.
  {
    echo "# written by scripts/pg-cluster.sh; rewritten on every start"
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "password_encryption = 'scram-sha-256'"
    echo "fsync = off"
    echo "synchronous_commit = off"
    echo "full_page_writes = off"
    echo "logging_collector = off"
    echo "log_min_messages = warning"
    if [ -n "${PGCLUSTER_CONF:-}" ]; then printf '%s\n' "$PGCLUSTER_CONF"; fi
  } | as_pg tee "$dir/data/sluice-cluster.conf" >/dev/null
  grep -q "^include_if_exists = 'sluice-cluster.conf'" "$dir/data/postgresql.conf" ||
    echo "include_if_exists = 'sluice-cluster.conf'" | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
}

cluster_wait_ready() {
  local dir=$1 port=$2
  for _ in $(seq 1 100); do
    "$PGBIN/pg_isready" -q -h "$dir" -p "$port" && return 0
    sleep 0.1
  done
  tail -n 30 "$dir/postgres.log" >&2 || true
  die "server in $dir did not become ready on port $port"
}

# Create or update role app with the password from PGAPP_PASSWORD. The password travels
# through the environment and psql's \getenv, never on a command line.
cluster_ensure_app() {
  local dir=$1 port=$2
  as_pg env PGAPP_PASSWORD="$PGAPP_PASSWORD" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 \
    -h "$dir" -p "$port" -U postgres -d postgres >/dev/null <<'EOF'
\getenv app_pw PGAPP_PASSWORD
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') AS need_app \gset
\if :need_app
  CREATE ROLE app LOGIN CREATEDB;
\endif
ALTER ROLE app PASSWORD :'app_pw';
EOF
}

cmd_start() {
  [ $# -eq 2 ] || die "usage: pg-cluster.sh start DIR PORT"
  local dir port=$2
  [ -n "${PGAPP_PASSWORD:-}" ] || die "set PGAPP_PASSWORD (the password of role app)"
  dir=$(abs_dir "$1")
  if [ "$(id -u)" -eq 0 ]; then chown "$PGUSER_OS": "$dir"; fi
  chmod 700 "$dir"
  cluster_init "$dir"
  if cluster_running "$dir"; then
    local running_port
    running_port=$(sed -n 4p "$dir/data/postmaster.pid" 2>/dev/null || true)
    [ "$running_port" = "$port" ] || die "cluster in $dir already runs on port $running_port"
  else
    cluster_write_conf "$dir" "$port"
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 start >/dev/null ||
      { tail -n 30 "$dir/postgres.log" >&2; die "could not start PostgreSQL in $dir"; }
  fi
  cluster_wait_ready "$dir" "$port"
  cluster_ensure_app "$dir" "$port"
}

cmd_stop() {
  [ $# -eq 1 ] || die "usage: pg-cluster.sh stop DIR"
  [ -d "$1" ] || return 0
  local dir
  dir=$(cd "$1" && pwd)
  cluster_running "$dir" || return 0
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
}

cmd_status() {
  [ $# -eq 1 ] || die "usage: pg-cluster.sh status DIR"
  [ -d "$1" ] && cluster_running "$(cd "$1" && pwd)"
}

cmd_psql() {
  [ $# -ge 2 ] || die "usage: pg-cluster.sh psql DIR PORT [psql args...]"
  local dir port=$2
  dir=$(cd "$1" && pwd)
  shift 2
  as_pg "$PGBIN/psql" -X -h "$dir" -p "$port" -U postgres "$@"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  psql) shift; cmd_psql "$@" ;;
  *) die "usage: pg-cluster.sh {start DIR PORT|stop DIR|status DIR|psql DIR PORT [args]}" ;;
esac
