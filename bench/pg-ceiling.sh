#!/usr/bin/env bash
# The daemon against its database's own ceiling, in one run (docs/benchmarks.md,
# "Against PostgreSQL's ceiling"). First pgbench runs what an applied event costs
# at least — insert the event, upsert its lead, insert an outbox row — 100 events
# per durable transaction, CLIENTS (2) clients, for SECS (20) seconds; then the
# daemon bench (`cargo bench --bench daemon postgres`, batch ingest only) on the
# same server. Prints one summary line: both rates and their ratio.
# Needs NURTURE_TEST_DATABASE_URL (default: the local server); a `nurture_ceiling`
# database is made on it. Knobs of the daemon bench pass through
# (NURTURE_BENCH_WORKERS, NURTURE_BENCH_LEADS, ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export NURTURE_TEST_DATABASE_URL="${NURTURE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
CLIENTS="${CLIENTS:-2}"
SECS="${SECS:-20}"
base="${NURTURE_TEST_DATABASE_URL%/*}"
db="$base/nurture_ceiling"
psql -q "$NURTURE_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS nurture_ceiling WITH (FORCE)" -c "CREATE DATABASE nurture_ceiling"
psql -q "$db" <<'SQL'
CREATE TABLE events (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, lead TEXT NOT NULL,
  at BIGINT NOT NULL, payload TEXT NOT NULL);
CREATE TABLE leads (id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE outbox (seq BIGSERIAL PRIMARY KEY, lead TEXT NOT NULL, payload TEXT NOT NULL);
SQL
script="$(mktemp)"
trap 'rm -f "$script"' EXIT
# 100 events a transaction, each statement one multi-row write (as a
# processing step writes them); each client its own leads, so no lock waits
# between clients.
payload="$(head -c 200 /dev/zero | tr '\0' x)"
sed "s/PAYLOAD/$payload/g" > "$script" <<'SQL'
\set e random(1, 2000000000)
BEGIN;
INSERT INTO events (id, lead, at, payload) SELECT :client_id || '-' || :e || '-' || g, 'l' || (:client_id * 1000000 + (:e + g) % 5000), 0, 'PAYLOAD' FROM generate_series(1, 100) g ON CONFLICT (id) DO NOTHING;
INSERT INTO leads (id, state, updated_at) SELECT DISTINCT 'l' || (:client_id * 1000000 + (:e + g) % 5000), 'PAYLOAD', 0 FROM generate_series(1, 100) g ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at;
INSERT INTO outbox (lead, payload) SELECT 'l' || (:client_id * 1000000 + (:e + g) % 5000), 'PAYLOAD' FROM generate_series(1, 100) g;
END;
SQL
tps="$(pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECS" -f "$script" "$db" 2>/dev/null \
  | awk '/^tps/ {print $3; exit}')"
ceiling="$(awk -v t="$tps" 'BEGIN {printf "%.0f", t * 100}')"
echo "pgbench: $CLIENTS clients, 100 events per durable transaction: $ceiling events/s" >&2
out="$(NURTURE_BENCH_BATCH_ONLY=1 cargo bench --quiet --bench daemon -- postgres | tee /dev/stderr)"
applied="$(printf '%s\n' "$out" | sed -n 's/.*= \([0-9]*\) events\/s processed.*/\1/p' | tail -n1)"
ratio="$(awk -v a="$applied" -v c="$ceiling" 'BEGIN {printf "%.0f", 100 * a / c}')"
echo "ceiling summary: pgbench $ceiling events/s, nurture applied $applied events/s: $ratio % (target >= 40 %)"
