#!/usr/bin/env bash
# run.sh: `make bench`. Compares sluice with PostgreSQL directly and with PgBouncer (session
# mode) on the same throwaway PostgreSQL 15 cluster, prices masking and audit inside sluice,
# then measures memory per idle connection.
#
# Modes (each a pgbench target):
#   direct       PostgreSQL
#   pgbouncer    PgBouncer, session mode
#   sluice       sluice as shipped: masking on (identity `bench` is masked), audit on (SQLite)
#   sluice-raw   the same sluice process, identity `bench-raw` listed in masking.unmask
#   nomask       a second sluice with `masking: { enabled: false }` (audit on)
#   noaudit      a third sluice with `audit: { enabled: false }` (masking on)
#   relay        SLUICE_RELAY_BIN, when set: another sluice build
# Every sluice runs 2 workers and keeps its audit store in bench-run/state/.
# Every proxy (each sluice, PgBouncer) runs in a session of its own (setsid), as a daemon or a
# service does. Why: with the kernel's scheduler autogroups (sched_autogroup_enabled, on by
# default without a cpu cgroup) a session shares one CPU weight among all its processes. Each
# PostgreSQL backend calls setsid and so has a weight of its own; a proxy started in this
# script's session would share one weight with pgbench, and any CPU it adds would come out of
# the load generator's share (docs/performance.md, session 9).
#
# Throughput: for each workload, BENCH_ROUNDS rounds (3) of BENCH_SECONDS seconds (6) per
# mode, the modes alternating inside each round (in reverse order every other round); the
# tables show median TPS and median average latency. Workloads (pgbench, -c 8 -j 2,
# pgbench -i -s 10) and the modes they run:
#   select-simple     -S -M simple                   direct pgbouncer nomask sluice noaudit
#   select-prepared   -S -M prepared                 direct pgbouncer nomask sluice noaudit
#   tpcb              the default TPC-B-like script  direct pgbouncer sluice noaudit
#   select-connect    -S -C (a new connection, with SCRAM authentication, per transaction)
#                                                    direct pgbouncer sluice
#   large-pii         bench/large_pii.sql: table pii, 100,000 rows of email, SSN, card number
#                     and an 80-byte note (bench/pii.py), ~15 MB, 2 clients
#                                                    direct pgbouncer sluice-raw sluice
#   large-result      (not by default) bench/large.sql, 100,000 generated rows, 2 clients
#                                                    direct pgbouncer sluice
#   write-latency     bench/update.sql: one single-row UPDATE per transaction, -c 1 -j 1
#                     -M simple: the latency of one write, whose audit event an audited
#                     sluice appends to its journal before forwarding it
#                                                    direct pgbouncer sluice noaudit
# Before the throughput runs the whole pii table is fetched direct, as `bench` and as
# `bench-raw`, and bench/pii.py checks that every sensitive value came back masked for `bench`
# and untouched for `bench-raw` (bench-run/masking-check.txt).
# Each run also records the CPU per transaction of the proxy's process (user and system time of
# all its threads, /proc/PID/stat) and of the whole machine (busy time in /proc/stat), so that
# what the audit or a proxy costs shows as CPU as well as TPS.
# After them: bench/audit_bench.c (the audit writer's sustained events/s, BENCH_AUDIT_EVENTS
# events from 2 producer threads into a fresh SQLite store) and bench/mask_scan.c (scanner GB/s
# on one core, PII-free text and 5% PII, BENCH_SCAN_MIB MiB), both built from build/src objects.
# Memory (first, on freshly started proxies): bench/idle_conns.py holds BENCH_IDLE_CONNS (1000)
# idle connections through sluice, then through PgBouncer, and reports the growth of the proxy's
# VmRSS per connection. The proxies are restarted before the throughput runs. If a sluice dies,
# bench-run/crashes.txt gets its signal and a backtrace from its core, and it is restarted.
#
# Knobs: BENCH_SECONDS, BENCH_ROUNDS, BENCH_SCALE (10), BENCH_IDLE_CONNS, BENCH_AUDIT_EVENTS
# (500000), BENCH_SCAN_MIB (64), SLUICE_RELAY_BIN (a second build measured as mode "relay" in
# the same run), BENCH_MODES (the modes above; a workload runs those of its modes listed),
# BENCH_WORKLOADS (names above). Everything lives in ./bench-run/; the tables also go to
# bench-run/results.txt, each pgbench output to bench-run/logs/, sluice logs to
# bench-run/sluice*.log. Every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=$ROOT/bench-run
SLUICE=${SLUICE_BIN:-$ROOT/build/sluice}
PGBIN=/usr/lib/postgresql/15/bin
PYTHON=/usr/bin/python3
CLK_TCK=$(getconf CLK_TCK)
export PATH=$PGBIN:$PATH

SECS=${BENCH_SECONDS:-6}
ROUNDS=${BENCH_ROUNDS:-3}
SCALE=${BENCH_SCALE:-10}
IDLE_CONNS=${BENCH_IDLE_CONNS:-1000}
AUDIT_EVENTS=${BENCH_AUDIT_EVENTS:-500000}
SCAN_MIB=${BENCH_SCAN_MIB:-64}
# SLUICE_RELAY_BIN: a second sluice build to compare against in the same run (mode "relay"),
# e.g. a build without statement inspection, to measure what inspection costs.
RELAY_BIN=${SLUICE_RELAY_BIN:-}
read -ra MODES <<<"${BENCH_MODES:-direct pgbouncer sluice sluice-raw nomask noaudit${RELAY_BIN:+ relay}}"
read -ra WORKLOADS <<<"${BENCH_WORKLOADS:-select-simple select-prepared tpcb select-connect large-pii write-latency}"

# Secrets of this run only: the upstream role app and the sluice identities `bench` and
# `bench-raw` (the same secret).
APP_PASSWORD=$(openssl rand -hex 16)
BENCH_SECRET=$(openssl rand -hex 16)

# The sluice processes: main (modes sluice and sluice-raw), nomask, noaudit. Per instance: pid,
# port, config, log, working directory (where a core lands).
declare -A SL_PID=() SL_PORT=() SL_ADMIN=()
SL_INSTANCES=()
PGB_PID=''

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
has_mode() { [[ " ${MODES[*]} " == *" $1 "* ]]; }

port_free() { ! ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }
pick_port() { local p=$1; while ! port_free "$p"; do p=$((p + 1)); done; echo "$p"; }

stop_pid() {
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local i
  for i in "${!SL_PID[@]}"; do stop_pid "${SL_PID[$i]}"; done
  stop_pid "$PGB_PID"
  stop_pid "${RELAY_PID:-}"
  "$ROOT/scripts/pg-cluster.sh" stop "$RUN/pg" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait until a TCP port on 127.0.0.1 accepts connections.
wait_port() {
  local port=$1 pid=$2 what=$3
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || die "$what exited (see its log in $RUN)"
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$what did not listen on port $port"
}

# ---------------------------------------------------------------------------------------------
# Setup

setup_postgres() {
  PG_PORT=$(pick_port 55432)
  log "PostgreSQL 15 on 127.0.0.1:$PG_PORT, pgbench -i -s $SCALE"
  PGAPP_PASSWORD=$APP_PASSWORD PGCLUSTER_CONF=$'max_connections = 1200\nshared_buffers = 256MB' \
    "$ROOT/scripts/pg-cluster.sh" start "$RUN/pg" "$PG_PORT"
  "$ROOT/scripts/pg-cluster.sh" psql "$RUN/pg" "$PG_PORT" -d postgres -qAt -c \
    "SELECT 1 FROM pg_database WHERE datname = 'bench'" | grep -q 1 ||
    "$ROOT/scripts/pg-cluster.sh" psql "$RUN/pg" "$PG_PORT" -d postgres -q -c \
      "CREATE DATABASE bench OWNER app"
  PGPASSWORD=$APP_PASSWORD pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U app bench \
    >"$RUN/logs/pgbench-init.log" 2>&1 || { cat "$RUN/logs/pgbench-init.log" >&2; die "pgbench -i failed"; }
}

pg_psql() { "$ROOT/scripts/pg-cluster.sh" psql "$RUN/pg" "$PG_PORT" "$@"; }

# The PII table of the large-pii workload (bench/pii.py), owned by app; PII_BYTES is the text
# size of one full result (the sum of the values' lengths).
setup_pii() {
  log "table pii: 100,000 rows of email, SSN, card, note (bench/pii.py)"
  pg_psql -d bench -q -v ON_ERROR_STOP=1 -c "DROP TABLE IF EXISTS pii" \
    -c "CREATE TABLE pii (id int PRIMARY KEY, email text, ssn text, card text, note text)" \
    -c "ALTER TABLE pii OWNER TO app" >/dev/null
  "$PYTHON" "$ROOT/bench/pii.py" gen 100000 | pg_psql -d bench -q -v ON_ERROR_STOP=1 -c "COPY pii FROM STDIN" ||
    die "loading table pii failed"
  pg_psql -d bench -q -c "VACUUM ANALYZE pii" >/dev/null
  PII_BYTES=$(pg_psql -d bench -qAt -c "SELECT sum(octet_length(id::text) + octet_length(email) +
    octet_length(ssn) + octet_length(card) + octet_length(note)) FROM pii")
}

# PgBouncer's userlist holds the verifier PostgreSQL stores for app (not the password): PgBouncer
# then checks clients without PBKDF2 and logs in upstream with the client's SCRAM keys, as
# sluice does with its stored verifier. (A plaintext userlist costs PgBouncer a PBKDF2 per login.)
setup_pgbouncer() {
  PGB_PORT=$(pick_port 56432)
  local d=$RUN/pgbouncer verifier
  mkdir -p "$d"
  verifier=$("$ROOT/scripts/pg-cluster.sh" psql "$RUN/pg" "$PG_PORT" -d postgres -qAt -c \
    "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
  cat >"$d/pgbouncer.ini" <<EOF
; generated by bench/run.sh
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $d/userlist.txt
pool_mode = session
max_client_conn = 2000
default_pool_size = 1150
max_db_connections = 0
logfile = $d/pgbouncer.log
log_connections = 0
log_disconnections = 0
EOF
  (umask 077; printf '"app" "%s"\n' "$verifier" >"$d/userlist.txt")
  chown -R postgres: "$d"
}

start_pgbouncer() {
  log "PgBouncer $(pgbouncer --version | head -1 | cut -d' ' -f2) (session mode) on 127.0.0.1:$PGB_PORT"
  # setsid and setpriv exec pgbouncer (which refuses to run as root) directly, so $! is its
  # pid (setsid forks only in a process group leader, which a background job here is not).
  setsid setpriv --reuid=postgres --regid=postgres --init-groups pgbouncer "$RUN/pgbouncer/pgbouncer.ini" \
    >>"$RUN/logs/pgbouncer.stderr" 2>&1 &
  PGB_PID=$!
  wait_port "$PGB_PORT" "$PGB_PID" pgbouncer
}

# Instance NAME of sluice: its config, log and working directory (main keeps the historical
# bench-run/sluice.yaml, sluice.log and bench-run/ itself).
sl_conf() { [ "$1" = main ] && echo "$RUN/sluice.yaml" || echo "$RUN/sluice-$1.yaml"; }
sl_log() { [ "$1" = main ] && echo "$RUN/sluice.log" || echo "$RUN/sluice-$1.log"; }
sl_dir() { [ "$1" = main ] && echo "$RUN" || echo "$RUN/$1"; }
mode_instance() { case $1 in sluice | sluice-raw) echo main ;; nomask | noaudit) echo "$1" ;; esac; }

# The config of one instance. $1 instance, $2 "plain" for a config with no masking, audit or
# state keys (for SLUICE_RELAY_BIN, which may be an older build that rejects them).
write_sluice_config() {
  local inst=$1 plain=${2:-} port admin_port masking=true audit=true
  # Below the ephemeral port range (32768-60999 by default): a client socket of an earlier
  # connection can hold a port there and make the listener fail to bind.
  port=$(pick_port $((27432 + 100 * ${#SL_PORT[@]})))
  admin_port=$(pick_port $((port + 48)))
  case $inst in nomask) masking=false ;; noaudit) audit=false ;; esac
  SL_PORT[$inst]=$port SL_ADMIN[$inst]=$admin_port
  {
    echo "# generated by bench/run.sh (sluice instance $inst)"
    echo "listen: { postgres: 127.0.0.1:$port, admin: 127.0.0.1:$admin_port }"
    echo "targets:"
    echo "  - { name: bench, host: 127.0.0.1, port: $PG_PORT, database: bench, user: app,"
    echo "      password_env: BENCH_DB_PASSWORD, sslmode: disable }"
    echo "identities:"
    echo "  users:"
    echo "    - { name: bench, kind: service, password_hash: \"$SL_HASH\" }"
    echo "    - { name: bench-raw, kind: service, password_hash: \"$SL_HASH\" }"
    echo "server: { workers: 2, log_level: warn, max_connections: 2000 }"
    if [ -z "$plain" ]; then
      echo "state: { driver: sqlite, path: $RUN/state/$inst.db }"
      echo "masking: { enabled: $masking, unmask: { identities: [bench-raw] } }"
      echo "audit: { enabled: $audit }"
    fi
  } >"$(sl_conf "$inst")"
  BENCH_DB_PASSWORD=$APP_PASSWORD "$SLUICE" check -c "$(sl_conf "$inst")" >&2 ||
    die "sluice check rejected $(sl_conf "$inst")"
}

setup_sluice() {
  [ -x "$SLUICE" ] || die "$SLUICE not found: run make first"
  # Run a private copy: a rebuild during the benchmark then changes nothing, and a core
  # matches the binary gdb reads.
  cp "$SLUICE" "$RUN/sluice.bin"
  SLUICE=$RUN/sluice.bin
  SL_HASH=$(printf '%s' "$BENCH_SECRET" | "$SLUICE" hash-token) || die "sluice hash-token failed"
  rm -rf "$RUN/state"
  mkdir -p "$RUN/state"
  local inst
  if has_mode sluice || has_mode sluice-raw || has_mode relay; then SL_INSTANCES+=(main); fi
  if has_mode nomask; then SL_INSTANCES+=(nomask); fi
  if has_mode noaudit; then SL_INSTANCES+=(noaudit); fi
  for inst in "${SL_INSTANCES[@]}"; do
    mkdir -p "$(sl_dir "$inst")"
    rm -f "$(sl_dir "$inst")"/core*
    write_sluice_config "$inst"
  done
}

setup_relay() {
  [ -x "$RELAY_BIN" ] || die "SLUICE_RELAY_BIN=$RELAY_BIN is not an executable"
  cp "$RELAY_BIN" "$RUN/relay.bin"
  mkdir -p "$RUN/relay"
  RELAY_PORT=$(pick_port 28932)
  write_sluice_config relay plain
  unset 'SL_PORT[relay]'
  sed -e "s/postgres: 127\.0\.0\.1:[0-9]*/postgres: 127.0.0.1:$RELAY_PORT/" \
    -e "s/admin: 127\.0\.0\.1:[0-9]*/admin: 127.0.0.1:$(pick_port $((RELAY_PORT + 48)))/" \
    "$RUN/sluice-relay.yaml" >"$RUN/relay.yaml"
  rm -f "$RUN/sluice-relay.yaml"
}

start_relay() {
  log "relay (SLUICE_RELAY_BIN) on 127.0.0.1:$RELAY_PORT (2 workers)"
  (cd "$RUN/relay" && BENCH_DB_PASSWORD=$APP_PASSWORD exec setsid "$RUN/relay.bin" serve -c "$RUN/relay.yaml") \
    >>"$RUN/relay.log" 2>&1 &
  RELAY_PID=$!
  wait_port "$RELAY_PORT" "$RELAY_PID" relay
}

# Every sluice runs in its own directory with core dumps allowed, so that a crash leaves a
# core to examine.
start_sluice() {
  local inst=$1
  log "sluice ($inst) on 127.0.0.1:${SL_PORT[$inst]} (2 workers)"
  (cd "$(sl_dir "$inst")" && ulimit -c unlimited && BENCH_DB_PASSWORD=$APP_PASSWORD \
    exec setsid "$SLUICE" serve -c "$(sl_conf "$inst")") >>"$(sl_log "$inst")" 2>&1 &
  SL_PID[$inst]=$!
  wait_port "${SL_PORT[$inst]}" "${SL_PID[$inst]}" "sluice ($inst)"
}

# If a sluice died, record how (exit status or signal, backtrace from its core when gdb is
# there, the tail of its log) in bench-run/crashes.txt and start a new one, so the remaining
# runs still measure. $1 says what was running; $2 names one instance (default: all).
sluice_check_alive() {
  local what=$1 inst rc core pid
  for inst in ${2:-${SL_INSTANCES[@]}}; do
    pid=${SL_PID[$inst]:-}
    [ -n "$pid" ] || continue
    kill -0 "$pid" 2>/dev/null && continue
    rc=0
    wait "$pid" 2>/dev/null || rc=$?
    {
      if [ "$rc" -gt 128 ]; then
        echo "sluice ($inst) died of signal $((rc - 128)) ($(kill -l $((rc - 128)))) during/after: $what"
      else
        echo "sluice ($inst) exited with status $rc during/after: $what"
      fi
      core=$(find "$(sl_dir "$inst")" -maxdepth 1 -name 'core*' ! -name '*.seen' -newer "$(sl_conf "$inst")" | head -1)
      if [ -n "$core" ] && command -v gdb >/dev/null; then
        echo "  core: $core; backtrace:"
        gdb -q -batch -ex 'thread apply all bt 12' "$SLUICE" "$core" 2>/dev/null |
          grep -E '^(Thread|#)' | sed 's/^/    /' | head -60
        mv "$core" "$core.seen"
      fi
      echo "  last lines of $(sl_log "$inst"):"
      tail -n 15 "$(sl_log "$inst")" | sed 's/^/    /'
    } >>"$RUN/crashes.txt"
    log "sluice ($inst) died during/after $what -- restarting it (details in $RUN/crashes.txt)"
    start_sluice "$inst"
  done
}

start_proxies() {
  local inst
  if has_mode pgbouncer; then start_pgbouncer; fi
  for inst in "${SL_INSTANCES[@]}"; do start_sluice "$inst"; done
  if has_mode relay; then start_relay; fi
}

stop_proxies() {
  local inst
  sluice_check_alive "$1"
  for inst in "${SL_INSTANCES[@]}"; do stop_pid "${SL_PID[$inst]:-}"; SL_PID[$inst]=''; done
  stop_pid "$PGB_PID"
  stop_pid "${RELAY_PID:-}"
  PGB_PID='' RELAY_PID=''
  # Let the server backends they held exit before the next phase.
  for _ in $(seq 1 100); do
    [ "$(pg_psql -d postgres -qAt -c \
      "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")" -le 1 ] && break
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------------------------
# Throughput

# Connection arguments and secret for one mode.
mode_port() {
  case $1 in
    direct) echo "$PG_PORT" ;; pgbouncer) echo "$PGB_PORT" ;; relay) echo "$RELAY_PORT" ;;
    *) echo "${SL_PORT[$(mode_instance "$1")]}" ;;
  esac
}
mode_user() { case $1 in direct | pgbouncer) echo app ;; sluice-raw) echo bench-raw ;; *) echo bench ;; esac; }
mode_secret() { case $1 in direct | pgbouncer) echo "$APP_PASSWORD" ;; *) echo "$BENCH_SECRET" ;; esac; }

workload_args() {
  case $1 in
    select-simple) echo "-c 8 -j 2 -S -M simple" ;;
    select-prepared) echo "-c 8 -j 2 -S -M prepared" ;;
    tpcb) echo "-c 8 -j 2" ;;
    select-connect) echo "-c 8 -j 2 -S -C" ;;
    large-pii) echo "-c 2 -j 2 -f $ROOT/bench/large_pii.sql" ;;
    large-result) echo "-c 2 -j 2 -f $ROOT/bench/large.sql" ;;
    # -s: a custom script's :scale is 1 unless given.
    write-latency) echo "-c 1 -j 1 -M simple -s $SCALE -f $ROOT/bench/update.sql" ;;
    *) die "unknown workload $1" ;;
  esac
}

# The modes a workload runs (those of them in BENCH_MODES), in the order they alternate.
workload_modes() {
  local all m out=()
  case $1 in
    # sluice next to both of the builds it is compared with (masking off, audit off)
    select-simple | select-prepared) all="direct pgbouncer nomask sluice noaudit" ;;
    tpcb | write-latency) all="direct pgbouncer sluice noaudit" ;;
    large-pii) all="direct pgbouncer sluice-raw sluice" ;;
    *) all="direct pgbouncer sluice" ;;
  esac
  for m in $all relay; do has_mode "$m" && out+=("$m"); done
  echo "${out[*]}"
}

# A pgbench run through sluice that did not end in time: record the stuck sluice's threads and
# sockets in crashes.txt (the process stays up; the run counts as failed).
record_hang() {
  local w=$1 mode=$2 round=$3 inst pid
  inst=$(mode_instance "$mode")
  {
    echo "pgbench $w $mode round $round did not finish within $((SECS + 60)) s (killed)"
    [ -n "$inst" ] || return 0
    pid=${SL_PID[$inst]:-}
    echo "  sluice ($inst) pid $pid; its sockets:"
    ss -tn state established "( sport = :${SL_PORT[$inst]} )" 2>/dev/null | sed 's/^/    /'
    if [ -n "$pid" ] && command -v gdb >/dev/null; then
      echo "  threads:"
      gdb -q -batch -p "$pid" -ex 'thread apply all bt 8' 2>/dev/null |
        grep -E '^(Thread|#)' | sed 's/^/    /' | head -60
    fi
    echo "  last lines of $(sl_log "$inst"):"
    tail -n 15 "$(sl_log "$inst")" | sed 's/^/    /'
  } >>"$RUN/crashes.txt"
}

# The process of a mode's proxy (none for direct).
proxy_pid() {
  case $1 in
    direct) ;;
    pgbouncer) echo "$PGB_PID" ;;
    relay) echo "${RELAY_PID:-}" ;;
    *) echo "${SL_PID[$(mode_instance "$1")]:-}" ;;
  esac
}
# CPU ticks (user + system, all threads) of process $1 so far; nothing without one.
proc_ticks() { if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; fi; }
# CPU ticks the whole machine spent busy so far (/proc/stat: user, nice, system, irq, softirq,
# steal): pgbench, PostgreSQL, the proxy and the kernel's network work together.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# Microseconds of CPU per transaction from ticks $1 to $2 over $3 transactions ("nan" when
# unknown).
us_per_tx() {
  if [ -n "$1" ] && [ -n "$2" ] && [ "${3:-0}" -gt 0 ]; then
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }'
  else
    echo nan
  fi
}

# One pgbench run; appends "workload mode round tps latency proxy_us machine_us" to raw.tsv
# (the last two: CPU µs per transaction of the proxy's process and of the machine, "nan" when
# unknown). A run that has not ended 60 s after its duration is killed and counted as failed (a
# proxy that stops answering must not stall the whole benchmark).
run_one() {
  local w=$1 mode=$2 round=$3 out tps lat rc=0 pid p0 p1 m0 m1 n proxy_us=nan machine_us=nan
  out=$RUN/logs/$w-$mode-$round.txt
  pid=$(proxy_pid "$mode")
  p0=$(proc_ticks "$pid") m0=$(machine_ticks)
  # shellcheck disable=SC2046
  PGPASSWORD=$(mode_secret "$mode") timeout -k 5 $((SECS + 60)) pgbench -n -T "$SECS" $(workload_args "$w") \
    -h 127.0.0.1 -p "$(mode_port "$mode")" -U "$(mode_user "$mode")" bench >"$out" 2>&1 || rc=$?
  p1=$(proc_ticks "$pid") m1=$(machine_ticks)
  if [ "$rc" -eq 0 ]; then
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -1)
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out" | head -1)
    n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -1)
    proxy_us=$(us_per_tx "$p0" "$p1" "$n")
    machine_us=$(us_per_tx "$m0" "$m1" "$n")
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    log "  $w $mode round $round HUNG: pgbench killed after $((SECS + 60)) s (see $RUN/crashes.txt)"
    record_hang "$w" "$mode" "$round"
  fi
  if [ -z "${tps:-}" ] || grep -Eq 'aborted|number of failed transactions: [1-9]' "$out"; then
    log "  $w $mode round $round FAILED (see $out)"
    tps=nan lat=nan proxy_us=nan machine_us=nan
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$mode" "$round" "$tps" "${lat:-nan}" "$proxy_us" \
    "$machine_us" >>"$RUN/raw.tsv"
  log "  $w $mode round $round: tps $tps, latency ${lat:-nan} ms, CPU per transaction: proxy $proxy_us µs, machine $machine_us µs"
}

# After a run through a sluice with audit on: the audit queue depth (admin /metrics,
# sluice_audit_queue_depth) when pgbench ended, and how long the writer took to drain it
# (waiting up to 20 s, so that one run's backlog does not slow the next one). Appends
# "workload mode round depth seconds" to audit-backlog.tsv.
audit_queue_depth() {
  curl -s --max-time 2 "http://127.0.0.1:${SL_ADMIN[$1]}/metrics" 2>/dev/null |
    sed -n 's/^sluice_audit_queue_depth \([0-9]*\).*/\1/p'
}

audit_drain() {
  local w=$1 mode=$2 round=$3 inst depth d t0 t
  inst=$(mode_instance "$mode")
  [ "$inst" = main ] || [ "$inst" = nomask ] || return 0
  depth=$(audit_queue_depth "$inst")
  [ -n "$depth" ] || return 0
  t0=$(date +%s.%N) d=$depth
  while [ "${d:-0}" -gt 0 ]; do
    t=$(date +%s.%N)
    if [ "$(echo "$t - $t0 > 20" | bc)" = 1 ]; then break; fi
    sleep 0.1
    d=$(audit_queue_depth "$inst")
  done
  t=$(printf '%.2f' "$(echo "$(date +%s.%N) - $t0" | bc)")
  [ "${d:-0}" -gt 0 ] && t=">20 (still $d queued)"
  printf '%s\t%s\t%s\t%s\t%s\n' "$w" "$mode" "$round" "$depth" "$t" >>"$RUN/audit-backlog.tsv"
  [ "$depth" -gt 0 ] && log "  audit queue after $w $mode round $round: $depth events, drained in $t s"
  return 0
}

run_throughput() {
  : >"$RUN/raw.tsv"
  : >"$RUN/audit-backlog.tsv"
  local w r m i modes order
  for w in "${WORKLOADS[@]}"; do
    read -ra modes <<<"$(workload_modes "$w")"
    log "workload $w: pgbench $(workload_args "$w"), $ROUNDS x ${SECS}s per mode (${modes[*]})"
    pg_psql -d bench -q -c "VACUUM ANALYZE" >/dev/null
    for r in $(seq 1 "$ROUNDS"); do
      # every other round in reverse order, so that no mode always runs right after another
      # (a round leaves dirty pages, a writer backlog, warm caches to the one after it)
      order=("${modes[@]}")
      if ((r % 2 == 0)); then
        order=()
        for ((i = ${#modes[@]} - 1; i >= 0; i--)); do order+=("${modes[$i]}"); done
      fi
      for m in "${order[@]}"; do
        run_one "$w" "$m" "$r"
        audit_drain "$w" "$m" "$r"
        if [ -n "$(mode_instance "$m")" ]; then sluice_check_alive "$w $m round $r" "$(mode_instance "$m")"; fi
      done
    done
  done
}

# ---------------------------------------------------------------------------------------------
# Masking check: the whole pii table through sluice as `bench` must come back with every
# sensitive value masked, and as `bench-raw` exactly as PostgreSQL sends it.

fetch_pii() {
  PGPASSWORD=$(mode_secret "$1") psql -X -q -AtF $'\t' -v ON_ERROR_STOP=1 \
    "host=127.0.0.1 port=$(mode_port "$1") dbname=bench user=$(mode_user "$1")" \
    -c "SELECT * FROM pii ORDER BY id"
}

check_masking() {
  [[ " ${WORKLOADS[*]} " == *" large-pii "* ]] || return 0
  local f=$RUN/masking-check.txt out
  : >"$f"
  fetch_pii direct >"$RUN/pii-direct.tsv" || { echo "direct fetch failed" >>"$f"; return 0; }
  if has_mode sluice; then
    log "masking check: the pii table through sluice as bench (masked)"
    if ! fetch_pii sluice >"$RUN/pii-masked.tsv" 2>>"$RUN/logs/masking-check.err"; then
      echo "masked identity (bench): FETCH FAILED (see $RUN/logs/masking-check.err)" >>"$f"
    elif out=$("$PYTHON" "$ROOT/bench/pii.py" verify "$RUN/pii-direct.tsv" "$RUN/pii-masked.tsv"); then
      echo "masked identity (bench): every sensitive value masked: $out" >>"$f"
    else
      echo "masked identity (bench): LEAK: $out" >>"$f"
    fi
    sluice_check_alive "masking check (bench)" main
  fi
  if has_mode sluice-raw; then
    log "masking check: the pii table through sluice as bench-raw (unmasked)"
    if ! fetch_pii sluice-raw >"$RUN/pii-raw.tsv" 2>>"$RUN/logs/masking-check.err"; then
      echo "unmasked identity (bench-raw): FETCH FAILED (see $RUN/logs/masking-check.err)" >>"$f"
    elif cmp -s "$RUN/pii-direct.tsv" "$RUN/pii-raw.tsv"; then
      echo "unmasked identity (bench-raw): $(wc -l <"$RUN/pii-raw.tsv") rows, identical to direct" >>"$f"
    else
      echo "unmasked identity (bench-raw): DIFFERS from direct in" \
        "$(diff "$RUN/pii-direct.tsv" "$RUN/pii-raw.tsv" | grep -c '^>') rows" >>"$f"
    fi
    sluice_check_alive "masking check (bench-raw)" main
  fi
  rm -f "$RUN/pii-direct.tsv" "$RUN/pii-masked.tsv" "$RUN/pii-raw.tsv"
}

# ---------------------------------------------------------------------------------------------
# Audit writer and masking scanner micro-benchmarks (bench/audit_bench.c, bench/mask_scan.c),
# built here from the objects `make` left in build/ (the Makefile's OBJ: every src/ object but
# main.o, and the embedded dashboard) with its CFLAGS (less -Werror) and LDLIBS, as make itself
# reports them.

build_tools() {
  local vars objs cflags ldlibs f
  mkdir -p "$RUN/bin"
  vars=$(make -s --no-print-directory -C "$ROOT" -f Makefile -f - bench-print-vars <<'EOF'
bench-print-vars:
	@echo "$(OBJ)"
	@echo "$(filter-out -Werror,$(CFLAGS))"
	@echo "$(LDLIBS)"
EOF
  ) || { log "could not read the Makefile's variables: tools not built"; return 1; }
  objs=$(sed -n 1p <<<"$vars") cflags=$(sed -n 2p <<<"$vars") ldlibs=$(sed -n 3p <<<"$vars")
  for f in $objs; do [ -f "$ROOT/$f" ] || { log "$f missing (run make): tools not built"; return 1; }; done
  for f in audit_bench mask_scan; do
    # shellcheck disable=SC2086
    (cd "$ROOT" && cc $cflags -O2 "bench/$f.c" $objs -o "$RUN/bin/$f" $ldlibs) \
      >"$RUN/logs/build-$f.log" 2>&1 || log "building bench/$f.c failed (see $RUN/logs/build-$f.log)"
  done
}

run_tools() {
  : >"$RUN/audit_bench.txt"
  : >"$RUN/mask_scan.txt"
  build_tools || true
  if [ -x "$RUN/bin/audit_bench" ]; then
    log "audit writer: $AUDIT_EVENTS events, 2 producer threads (bench/audit_bench.c)"
    "$RUN/bin/audit_bench" "$AUDIT_EVENTS" 2 "$RUN/state" >>"$RUN/audit_bench.txt" 2>&1 ||
      echo "audit_bench FAILED (status $?)" >>"$RUN/audit_bench.txt"
  else
    echo "audit_bench not built (see $RUN/logs/build-audit_bench.log)" >>"$RUN/audit_bench.txt"
  fi
  if [ -x "$RUN/bin/mask_scan" ]; then
    log "masking scanner: $SCAN_MIB MiB per text (bench/mask_scan.c)"
    "$RUN/bin/mask_scan" "$SCAN_MIB" >>"$RUN/mask_scan.txt" 2>&1 ||
      echo "mask_scan FAILED (status $?)" >>"$RUN/mask_scan.txt"
  else
    echo "mask_scan not built (see $RUN/logs/build-mask_scan.log)" >>"$RUN/mask_scan.txt"
  fi
}

# ---------------------------------------------------------------------------------------------
# Memory per idle connection

run_memory() {
  local mode pid out
  for mode in sluice pgbouncer; do
    has_mode "$mode" || continue
    pid=$([ "$mode" = sluice ] && echo "${SL_PID[main]}" || echo "$PGB_PID")
    kill -0 "$pid" 2>/dev/null || { echo "$mode: not running" >>"$RUN/memory.txt"; continue; }
    log "memory: $IDLE_CONNS idle connections through $mode"
    if out=$(PGPASSWORD=$(mode_secret "$mode") PGAPP_PASSWORD=$APP_PASSWORD \
      "$PYTHON" "$ROOT/bench/idle_conns.py" --pid "$pid" -n "$IDLE_CONNS" \
      --dsn "host=127.0.0.1 port=$(mode_port "$mode") dbname=bench user=$(mode_user "$mode")" \
      --pg-dsn "host=127.0.0.1 port=$PG_PORT dbname=bench user=app" 2>&1); then
      printf '%-9s %s\n' "$mode:" "$out" >>"$RUN/memory.txt"
    else
      printf '%-9s FAILED: %s\n' "$mode:" "$(tail -n 1 <<<"$out")" >>"$RUN/memory.txt"
    fi
    sleep 1
    if [ "$mode" = sluice ]; then sluice_check_alive "memory test ($IDLE_CONNS connections, then closing them)" main; fi
  done
}

# ---------------------------------------------------------------------------------------------

main() {
  command -v pgbench >/dev/null || die "pgbench not found"
  command -v pgbouncer >/dev/null || die "pgbouncer not found"
  [ "$(id -u)" -eq 0 ] || die "run as root (PostgreSQL and PgBouncer run as user postgres)"
  local t0=$SECONDS
  mkdir -p "$RUN/logs"
  rm -f "$RUN"/logs/*.txt "$RUN"/logs/*.err "$RUN/memory.txt" "$RUN/crashes.txt" "$RUN"/sluice*.log \
    "$RUN"/core* "$RUN/masking-check.txt"
  ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

  LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
  setup_postgres
  if [[ " ${WORKLOADS[*]} " == *" large-pii "* ]]; then setup_pii; fi
  if has_mode pgbouncer; then setup_pgbouncer; fi
  if has_mode sluice || has_mode sluice-raw || has_mode nomask || has_mode noaudit || has_mode relay; then
    setup_sluice
  fi
  if has_mode relay; then setup_relay; fi
  # Memory first, on fresh proxy processes; then fresh ones again for throughput.
  : >"$RUN/memory.txt"
  start_proxies
  run_memory
  stop_proxies "memory test"
  start_proxies
  check_masking
  run_throughput
  stop_proxies "the last run"
  run_tools

  {
    echo "sluice benchmark, $(date -u "+%Y-%m-%d %H:%M UTC"), $(nproc) CPUs, load average before: $LOAD_BEFORE"
    echo "pgbench -s $SCALE, $ROUNDS rounds x ${SECS}s per mode, medians; PostgreSQL 15 (fsync off), PgBouncer session mode, sluice 2 workers"
    echo
    "$PYTHON" "$ROOT/bench/report.py" "$RUN/raw.tsv" --result-bytes "${PII_BYTES:-0}"
    if [ -s "$RUN/masking-check.txt" ]; then
      echo
      echo "Masking check (the whole pii table, direct vs through sluice):"
      sed 's/^/  /' "$RUN/masking-check.txt"
    fi
    echo
    echo "Audit queue when a run through sluice (audit on) ended, and seconds the writer took to drain it:"
    if awk -F'\t' '$4 > 0 { found = 1 } END { exit !found }' "$RUN/audit-backlog.tsv"; then
      awk -F'\t' '{ printf "  %-16s %-10s round %s: %7d events queued, drained in %s s\n", $1, $2, $3, $4, $5 }' \
        "$RUN/audit-backlog.tsv"
    else
      echo "  always empty ($(wc -l <"$RUN/audit-backlog.tsv") runs checked)"
    fi
    echo
    echo "Audit writer (bench/audit_bench.c, SQLite store, no admin feed):"
    sed 's/^/  /' "$RUN/audit_bench.txt"
    if compgen -G "$RUN/state/*.db" >/dev/null; then
      echo "  audit stores after the run: $(cd "$RUN/state" && du -h -- *.db | tr '\t\n' ' ')"
    fi
    echo
    echo "Masking scanner (bench/mask_scan.c, one core):"
    sed 's/^/  /' "$RUN/mask_scan.txt"
    echo
    echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews TPS; compare ratios)"
    echo
    echo "Memory per idle connection ($IDLE_CONNS connections, growth of the proxy's VmRSS):"
    cat "$RUN/memory.txt"
    if [ -s "$RUN/crashes.txt" ]; then echo; echo "sluice crashes:"; cat "$RUN/crashes.txt"; fi
    echo
    echo "whole benchmark: $((SECONDS - t0)) s"
  } | tee "$RUN/results.txt"
  log "results in $RUN/results.txt"
}

main "$@"
