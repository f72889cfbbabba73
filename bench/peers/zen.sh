#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Nurture's evaluator against GoRules zen-engine (crates.io) on the same
# scoring decision over the same events; see docs/benchmarks.md, "Evaluator against peers".
#
#   bench/peers/zen.sh        # LEADS=2000 EVENTS=100000 SEED=42 REPS=9
#
# Builds what it needs (cargo fetches zen-engine), generates the events into a
# temporary directory, runs both engines in turns in one process (one thread,
# one event at a time), checks that every event gets the same points and
# every lead the same score from both, and prints one summary line (the
# events/s of each timed run go to stderr).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"
REPS=${REPS:-9}

build_runner
gen_events
"$bin" zen --rules "$here/rules" --zen "$here/zen" --events "$events" --reps "$REPS"
