#!/usr/bin/env bash
# Intake while slow plugins run (docs/benchmarks.md, "Slow plugins"): a daemon
# on SQLite with one plugin (tests/plugins/slow.wasm) spinning ~80 ms per call;
# 100 events that call it, then 20 single POSTs one after another. Prints one
# line: the POSTs' median and longest wait. Usage: bench/slow-plugins.sh [BIN]
# (default target/release/nurture; SPIN sets the rounds per call).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${1:-target/release/nurture}"
[[ -x "$bin" ]] || cargo build --quiet --release
BIN="$bin" SPIN="${SPIN:-85000000}" WASM="$PWD/tests/plugins/slow.wasm" python3 - <<'PY'
import json, os, statistics, subprocess, tempfile, time, urllib.request
d = tempfile.mkdtemp()
os.makedirs(f"{d}/rules")
with open(f"{d}/rules/r.yaml", "w") as f:
    f.write(f"""scoring:
  - {{ name: any, on: '*', points: 1 }}
plugins:
  - {{ name: slow, wasm: {os.environ['WASM']}, on: slow, config: {{ spin: {os.environ['SPIN']} }}, fuel: 100000000000, timeout: 300ms }}
""")
p = subprocess.Popen([os.environ["BIN"], "serve", "--listen", "127.0.0.1:0", "--database-url",
                      f"sqlite://{d}/n.db", "--rules", f"{d}/rules", "--outbox", f"{d}/out"],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
base = p.stdout.readline().strip().split()[-1]
def post(body):
    r = urllib.request.Request(base + "/v1/events", data=json.dumps(body).encode(), method="POST",
                               headers={"content-type": "application/json"})
    t = time.monotonic()
    urllib.request.urlopen(r, timeout=120).read()
    return time.monotonic() - t
post({"batch": [{"id": f"s{i}", "lead": f"a{i}", "type": "slow"} for i in range(100)]})
time.sleep(0.3)
waits = [post({"id": f"q{i}", "lead": f"b{i}", "type": "x"}) for i in range(20)]
print(f"slow plugins: 20 POSTs while 100 calls of ~80 ms run: median {statistics.median(waits)*1000:.0f} ms, longest {max(waits)*1000:.0f} ms")
p.terminate()
p.wait()
PY
