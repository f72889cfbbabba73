#!/usr/bin/env bash
# Ingest over HTTP with the ingest rate limits off and on (docs/benchmarks.md,
# "Ingest rate limits"): the release binary on SQLite, EVENTS (100,000) events
# of `nurture gen` posted in batches of 100 by CLIENTS (4) keep-alive clients,
# each with its own write key. Three runs: limits off; limits on but above
# the load (--ingest-per-key and --ingest-per-address 100000: what the check
# costs); and a per-key limit of 5 requests/s that binds (each client gets
# 429s and waits Retry-After). Prints one summary line per run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EVENTS="${EVENTS:-100000}"
CLIENTS="${CLIENTS:-4}"
cargo build --quiet --release --bin nurture
bin="${CARGO_TARGET_DIR:-target}/release/nurture"
work="$(mktemp -d)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" gen --leads 10000 --events "$EVENTS" --seed 3 >"$work/events.jsonl"
keys="$(seq -s, -f 'key%g' 1 "$CLIENTS")"

run() {
  local name="$1"
  shift
  rm -f "$work"/nurture.db*
  "$bin" serve --database-url "sqlite://$work/nurture.db" --rules tests/fixtures/daemon-rules \
    --listen 127.0.0.1:0 --outbox "$work/outbox" --write-key "$keys" "$@" \
    >"$work/out" 2>"$work/log" &
  pid=$!
  for _ in $(seq 1 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
  local url
  url="$(sed -n 's/^nurture listening on //p' "$work/out")"
  python3 - "$url" "$work/events.jsonl" "$CLIENTS" "$name" <<'PY'
import http.client, json, sys, threading, time, urllib.parse
url, path, clients, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
u = urllib.parse.urlparse(url)
lines = open(path).read().splitlines()
batches = [lines[i:i + 100] for i in range(0, len(lines), 100)]
stats = {"accepted": 0, "limited": 0}
lock = threading.Lock()
def client(n):
    conn = http.client.HTTPConnection(u.hostname, u.port)
    for b in batches[n::clients]:
        body = '{"batch": [' + ",".join(b) + "]}"
        while True:
            try:
                conn.request("POST", "/v1/events", body,
                             {"Content-Type": "application/json", "Authorization": f"Bearer key{n + 1}"})
                r = conn.getresponse()
                data = r.read()
            except (ConnectionError, http.client.HTTPException):
                # A 429 is answered before the body is read, and the
                # server closes that connection: open another.
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port)
                continue
            if r.status == 429:
                with lock:
                    stats["limited"] += 1
                time.sleep(int(r.getheader("Retry-After", "1")))
                continue
            assert r.status == 202, (r.status, data)
            with lock:
                stats["accepted"] += json.loads(data)["accepted"]
            break
t0 = time.time()
threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
secs = time.time() - t0
print(f"ingest-limits summary: {name}: {stats['accepted']} events in {secs:.1f} s = "
      f"{stats['accepted'] / secs:,.0f} events/s acknowledged, {stats['limited']} answers 429")
PY
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

run "limits off"
run "limits on, above the load" --ingest-per-key 100000 --ingest-per-address 100000
run "5 requests/s per key" --ingest-per-key 5
