#!/usr/bin/env bash
# Installs the Debian packages sluice needs to build, test, benchmark and demo,
# but only those that are missing (design.md section 5). Safe to run repeatedly.
set -euo pipefail

pkgs=(
  build-essential pkg-config clang libclang-rt-14-dev clang-format
  libssl-dev libcyaml-dev libyaml-dev libcjson-dev libjansson-dev
  libpg-query-dev libprotobuf-c-dev libvectorscan-dev libsqlite3-dev libzstd-dev libpq-dev
  libmicrohttpd-dev libcurl4-openssl-dev libcjose-dev libcmocka-dev
  postgresql-15 postgresql-client-15 pgbouncer
  python3 python3-pytest python3-pytest-xdist python3-psycopg python3-psycopg2 python3-zstandard
  libpostgresql-jdbc-java default-jdk-headless golang-go golang-github-lib-pq-dev
  golang-github-jackc-pgconn-dev golang-github-jackc-pgx-v4-dev golang-github-jackc-pgmock-dev
  golang-github-stretchr-testify-dev golang-github-jmoiron-sqlx-dev golang-github-jinzhu-gorm-dev
  golang-github-jinzhu-now-dev golang-github-erikstmartin-go-testdb-dev
  nodejs npm procps iproute2 util-linux openssl libnss-wrapper
  prometheus chromium
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# node and npm may come from outside Debian on some machines; accept those.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
clean=()
for p in "${missing[@]}"; do [ -n "$p" ] && clean+=("$p"); done

if ((${#clean[@]})); then
  echo "install-deps: installing ${clean[*]}"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq --no-install-recommends "${clean[@]}" >/dev/null
fi
# The Debian package starts a cluster on 5432 we do not use; the harness runs its own.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_ctlcluster 15 main stop 2>/dev/null || true
fi
exit 0
