#!/usr/bin/env bash
# Retention (docs/operations.md, docs/benchmarks.md "Retention"): prunes a
# large history and measures it, on SQLite and, when PG_URL names a server,
# PostgreSQL (a database `nurture_prune_bench` is made there anew).
#
# 1. Sizing: a `nurture gen` workload of SIZING_EVENTS events (default
#    100,000, 10,000 leads, spread over 30 days ending now) is imported into
#    a running daemon; rows and bytes per table are printed, then again
#    after `nurture prune --as-of` a year and a day later (all of it prunable).
# 2. Speed: a history of PRUNE_EVENTS applied events (default 1,000,000, of
#    100,000 leads, all 400 days old) with as many timeline and ledger rows
#    and one sent email per five events is written straight into the
#    tables, then pruned by `nurture prune` with the default settings while
#    a daemon on the same database takes batches of 100 events: the prune's
#    time per kind, and the ingest requests' latency meanwhile.
#
# NURTURE_BIN: the binary (default: target/release/nurture, built first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${NURTURE_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet -p nurture
  BIN=target/release/nurture
fi
SIZING_EVENTS=${SIZING_EVENTS:-100000}
PRUNE_EVENTS=${PRUNE_EVENTS:-1000000}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

start_daemon() { # URL LOG -> sets PID, BASE
  "$BIN" serve --database-url "$1" --rules rules --listen 127.0.0.1:0 --outbox "$WORK/outbox" \
    --retain-event-payloads never --retain-timeline never --retain-outbox-bodies never --retain-ledger never \
    >"$WORK/stdout" 2>"$2" &
  PID=$!
  for _ in $(seq 100); do
    BASE=$(sed -n 's/^nurture listening on //p' "$WORK/stdout")
    [ -n "$BASE" ] && return 0
    sleep 0.1
  done
  echo "daemon did not start" >&2; exit 1
}

settle() {
  for _ in $(seq 3000); do
    h=$(curl -s "$BASE/healthz")
    if python3 -c 'import json,sys; h=json.loads(sys.argv[1]); sys.exit(0 if h["events_pending"]==0 else 1)' "$h"; then return 0; fi
    sleep 0.2
  done
  echo "not settled: $h" >&2; exit 1
}

sizes() { # URL
  case "$1" in
    sqlite:*) sqlite3 "${1#sqlite://}" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
      for t in events timeline leads outbox ledger transitions emails enrollments assignments feedback due_work; do
        rows=$(sqlite3 "${1#sqlite://}" "SELECT COUNT(*) FROM $t")
        bytes=$(sqlite3 "${1#sqlite://}" "SELECT COALESCE(SUM(pgsize),0) FROM dbstat WHERE name = '$t' OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = '$t')")
        printf '  %-12s %9s rows %8.1f MB\n' "$t" "$rows" "$(echo "$bytes/1000000" | bc -l)"
      done
      printf '  %-12s %8.1f MB\n' "file" "$(echo "$(stat -c %s "${1#sqlite://}")/1000000" | bc -l)" ;;
    *) psql -qAt "$1" -c "VACUUM ANALYZE" >/dev/null
      for t in events timeline leads outbox ledger transitions emails enrollments assignments feedback due_work; do
        psql -qAt -F ' ' "$1" -c "SELECT '$t', (SELECT COUNT(*) FROM $t), pg_total_relation_size('$t')" |
          awk '{printf "  %-12s %9s rows %8.1f MB\n", $1, $2, $3/1000000}'
      done ;;
  esac
}

sizing() { # NAME URL
  echo "== sizing, $1: $SIZING_EVENTS events of $((SIZING_EVENTS / 10)) leads over 30 days"
  start_daemon "$2" "$WORK/sizing.log"
  "$BIN" gen --leads $((SIZING_EVENTS / 10)) --events "$SIZING_EVENTS" \
    --start "$(date -u -d '30 days ago' +%Y-%m-%dT%H:%M:%SZ)" --span 30d >"$WORK/events.jsonl"
  "$BIN" import "$WORK/events.jsonl" --url "$BASE" | tail -n1
  settle
  kill -TERM $PID; wait $PID || true
  sizes "$2"
  echo "  after nurture prune --as-of a year and a day later (the defaults), then VACUUM (FULL):"
  "$BIN" prune --database-url "$2" --as-of "$(date -u -d '366 days' +%Y-%m-%dT%H:%M:%SZ)" | sed 's/^/    /'
  case "$2" in sqlite:*) sqlite3 "${2#sqlite://}" "VACUUM" ;; *) psql -qAt "$2" -c "VACUUM FULL" ;; esac
  sizes "$2"
}

history() { # URL: PRUNE_EVENTS applied events 400 days old, and their rows
  local t0 leads=$((PRUNE_EVENTS / 10)) pad
  t0=$(( ($(date +%s) - 400 * 86400) * 1000 ))
  pad=$(printf 'x%.0s' $(seq 200))
  case "$1" in
    sqlite:*) sqlite3 "${1#sqlite://}" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $PRUNE_EVENTS)
INSERT INTO events (id, lead, type, at, payload, received_at, processed_at, part)
  SELECT 'h' || x, 'l' || (x % $leads), 'page_viewed', $t0 + x * 1000,
    '{"id":"h' || x || '","lead":"l' || (x % $leads) || '","type":"page_viewed","properties":{"url":"https://example.com/$pad"}}',
    $t0 + x * 1000, $t0 + x * 1000 + 5, x % 16 FROM c;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $PRUNE_EVENTS)
INSERT INTO timeline (lead, at, kind, detail)
  SELECT 'l' || (x % $leads), $t0 + x * 1000, 'note', '{"note":"postponed","reason":"$pad"}' FROM c;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $PRUNE_EVENTS)
INSERT INTO ledger (lead, n, rule, points, event, at, reason)
  SELECT 'l' || (x % $leads), x / $leads, 'page-visits', 1, 'h' || x, $t0 + x * 1000, NULL FROM c;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $PRUNE_EVENTS / 5)
INSERT INTO outbox (lead, kind, payload, created_at, state, sent_at)
  SELECT 'l' || (x % $leads), 'email', '{"message_id":"<m' || x || '@example.com>","to":"l' || x || '@example.com","body":"$pad$pad$pad$pad"}',
    $t0 + x * 5000, 'sent', $t0 + x * 5000 + 100 FROM c;
SQL
    ;;
    *) psql -qAt "$1" <<SQL
INSERT INTO events (id, lead, type, at, payload, received_at, processed_at, part)
  SELECT 'h' || x, 'l' || (x % $leads), 'page_viewed', $t0 + x * 1000,
    '{"id":"h' || x || '","lead":"l' || (x % $leads) || '","type":"page_viewed","properties":{"url":"https://example.com/$pad"}}',
    $t0 + x * 1000, $t0 + x * 1000 + 5, x % 16 FROM generate_series(1, $PRUNE_EVENTS) x;
INSERT INTO timeline (lead, at, kind, detail)
  SELECT 'l' || (x % $leads), $t0 + x * 1000, 'note', '{"note":"postponed","reason":"$pad"}' FROM generate_series(1, $PRUNE_EVENTS) x;
INSERT INTO ledger (lead, n, rule, points, event, at, reason)
  SELECT 'l' || (x % $leads), x / $leads, 'page-visits', 1, 'h' || x, $t0 + x * 1000, NULL FROM generate_series(1, $PRUNE_EVENTS) x;
INSERT INTO outbox (lead, kind, payload, created_at, state, sent_at)
  SELECT 'l' || (x % $leads), 'email', '{"message_id":"<m' || x || '@example.com>","to":"l' || x || '@example.com","body":"$pad$pad$pad$pad"}',
    $t0 + x * 5000, 'sent', $t0 + x * 5000 + 100 FROM generate_series(1, $PRUNE_EVENTS / 5) x;
VACUUM ANALYZE;
SQL
    ;;
  esac
}

speed() { # NAME URL
  echo "== pruning, $1: $PRUNE_EVENTS events, $PRUNE_EVENTS timeline and ledger rows, $((PRUNE_EVENTS / 5)) sent emails, all 400 days old"
  "$BIN" migrate --database-url "$2" >/dev/null
  history "$2"
  start_daemon "$2" "$WORK/speed.log"
  # Ingest while the prune runs: 100-event batches, one after another.
  rm -f "$WORK/latency.stop"
  python3 - "$BASE" "$WORK/latency" <<'PY' &
import json, sys, time, urllib.request
base, out = sys.argv[1], sys.argv[2]
lat, n = [], 0
stop = time.time() + 3600
while time.time() < stop:
    try:
        open(out + ".stop").close(); break
    except FileNotFoundError:
        pass
    batch = [{"id": f"live{n}-{i}", "lead": f"live{i % 50}", "type": "page_viewed"} for i in range(100)]
    n += 1
    req = urllib.request.Request(base + "/v1/events", json.dumps({"batch": batch}).encode(),
                                 {"Content-Type": "application/json"})
    t = time.time()
    urllib.request.urlopen(req).read()
    lat.append(time.time() - t)
lat.sort()
with open(out, "w") as f:
    f.write(f"{len(lat)} batches of 100 events posted meanwhile: p50 {lat[len(lat)//2]*1000:.1f} ms, "
            f"p99 {lat[int(len(lat)*0.99)]*1000:.1f} ms, max {lat[-1]*1000:.1f} ms\n")
PY
  LOADER=$!
  sleep 2
  /usr/bin/time -f '  prune: %e s wall, %M KB peak' "$BIN" prune --database-url "$2" | sed 's/^/  /'
  touch "$WORK/latency.stop"; wait $LOADER
  sed 's/^/  /' "$WORK/latency"
  settle
  echo "  every live event applied: $(curl -s "$BASE/healthz")"
  kill -TERM $PID; wait $PID || true
}

rm -f "$WORK"/*.db*
sizing SQLite "sqlite://$WORK/sizing.db"
speed SQLite "sqlite://$WORK/speed.db"
if [ -n "${PG_URL:-}" ]; then
  base=${PG_URL%/*}
  for db in nurture_prune_sizing nurture_prune_speed; do
    psql -qAt "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  done
  sizing PostgreSQL "$base/nurture_prune_sizing"
  speed PostgreSQL "$base/nurture_prune_speed"
fi
