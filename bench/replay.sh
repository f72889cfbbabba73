#!/usr/bin/env bash
# Backtest speed (docs/benchmarks.md, "Replay"): a stored history of
# NURTURE_REPLAY_EVENTS (1,000,000) `nurture gen` events of
# NURTURE_REPLAY_LEADS (100,000) leads, spread over 14 days a month ago, in a
# SQLite database, replayed through the example rules and a candidate (the
# MQL bar at 60 instead of 50) by `nurture replay`, which also runs due work
# up to now; then the same comparison from a file (`simulate --compare`).
# The history is written straight into the `events` table (python3's
# sqlite3) rather than through a daemon, which would apply it too.
# Prints one summary line; the figures as they come go to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
leads="${NURTURE_REPLAY_LEADS:-100000}"
events="${NURTURE_REPLAY_EVENTS:-1000000}"
cargo build --release --quiet
bin="$PWD/target/release/nurture"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start="$(date -u -d '-30 days' +%Y-%m-%dT%H:%M:%SZ)"
"$bin" gen --leads "$leads" --events "$events" --span 14d --start "$start" > "$work/events.jsonl"
"$bin" migrate --database-url "sqlite://$work/history.db" >&2
python3 - "$work" <<'PY'
import json, sqlite3, sys
work = sys.argv[1]
db = sqlite3.connect(f"{work}/history.db")
def rows():
    with open(f"{work}/events.jsonl") as f:
        for line in f:
            e = json.loads(line)
            # `at` in epoch ms as the daemon stores it; the payload as sent.
            from datetime import datetime
            at = int(datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp() * 1000)
            yield (e["id"], e["lead"], e["type"], at, line.strip(), at, 0)
db.executemany(
    "INSERT INTO events (id, lead, type, at, payload, received_at, part) VALUES (?,?,?,?,?,?,?)",
    rows(),
)
db.commit()
PY
mkdir "$work/candidate"
for f in rules/*.yaml; do
  sed -e "s#\.\./plugins/#$PWD/plugins/#" -e "s/mql: 'lead.score >= 50'/mql: 'lead.score >= 60'/" "$f" > "$work/candidate/$(basename "$f")"
done
measure() { # label, command...: seconds and peak RSS (MiB) of the command
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/$label.out" 2> "$work/$label.err"
  read -r secs kib < "$work/time"
  echo "$label: ${secs} s, peak RSS $((kib / 1024)) MiB; $(head -n1 "$work/$label.out")" >&2
  eval "${label}_s=$secs; ${label}_mib=$((kib / 1024))"
}
measure replay "$bin" replay --current rules --rules "$work/candidate" --database-url "sqlite://$work/history.db" --limit 0
measure compare "$bin" simulate rules --events "$work/events.jsonl" --until "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --compare "$work/candidate" --limit 0
measure simulate "$bin" simulate rules --events "$work/events.jsonl" --until "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "replay summary: events=$events leads=$leads replay_s=$replay_s replay_peak_mib=$replay_mib compare_file_s=$compare_s compare_peak_mib=$compare_mib simulate_one_s=$simulate_s"
