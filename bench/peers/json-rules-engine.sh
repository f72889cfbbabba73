#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Nurture's evaluator against json-rules-engine (npm, Node.js) on the same
# scoring decision over the same events; see docs/benchmarks.md, "Evaluator against peers".
#
#   bench/peers/json-rules-engine.sh   # LEADS=2000 EVENTS=100000 SEED=42 ROUNDS=3 REPS=3
#
# Builds Nurture's side, installs json-rules-engine (npm ci, pinned by
# package-lock.json), generates the events into a temporary directory, then
# runs the two engines in turns: ROUNDS rounds of one Nurture process and one
# Node.js process, each with a warm-up and REPS timed runs (one thread, one
# event at a time). Node.js checks every event's points and every lead's score
# against Nurture's, from the same run. Prints one summary line (the events/s
# of each timed run go to stderr).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"
ROUNDS=${ROUNDS:-3}
REPS=${REPS:-3}

need node "Node.js 20 or later"
need npm "Node.js 20 or later"
build_runner
echo "installing json-rules-engine (npm ci) ..." >&2
(cd "$here/json-rules-engine" && npm ci --no-audit --no-fund --loglevel=error >&2)
gen_events

# "<name> <median> <rate,rate,...>" -> the rates, one per line.
rates() { read -r _ _ list <<<"$1" && tr ',' '\n' <<<"$list"; }

: >"$tmp/nurture.rates"
: >"$tmp/jre.rates"
for _ in $(seq "$ROUNDS"); do
    line=$("$bin" nurture --rules "$here/rules" --events "$events" --reps "$REPS" --out "$tmp/nurture.json")
    rates "$line" >>"$tmp/nurture.rates"
    line=$(node "$here/json-rules-engine/bench.js" --events "$events" --expect "$tmp/nurture.json" --reps "$REPS")
    rates "$line" >>"$tmp/jre.rates"
done
echo "nurture events/s: $(paste -sd, "$tmp/nurture.rates")" >&2
echo "json-rules-engine events/s: $(paste -sd, "$tmp/jre.rates")" >&2

median() { sort -g "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
awk -v n="$(median "$tmp/nurture.rates")" -v j="$(median "$tmp/jre.rates")" \
    -v samples="$((ROUNDS * REPS))" -v rounds="$ROUNDS" -v reps="$REPS" -v events="$n_events" -v leads="$LEADS" '
    function grouped(x,    s, out) {
        s = sprintf("%.0f", x); out = ""
        while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
        return s out
    }
    BEGIN {
        r = n / j
        printf "evaluator vs json-rules-engine: nurture %s events/s, json-rules-engine %s events/s, ratio %.2fx (target >= 10x: %s); median of %d (%d rounds of %d), %s events, %s leads, results agree\n",
            grouped(n), grouped(j), r, (r >= 10 ? "met" : "NOT met"), samples, rounds, reps, grouped(events), grouped(leads)
    }'
