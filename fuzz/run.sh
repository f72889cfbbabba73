#!/usr/bin/env bash
# Fuzzes where untrusted text enters: the rules loader and the event parsers
# (fuzz/fuzz_targets). Usage: fuzz/run.sh [SECONDS per target, default 600]
#
# New inputs that reach new code are added to fuzz/corpus/<target> (kept in
# git); fuzz/seeds/<target> holds the hand-written starting points. A crash
# stops the run and leaves the input in fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"

command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz@0.13.2

# cargo-fuzz passes nightly-only flags (-Z sanitizer, coverage passes); the
# stable toolchain accepts them with RUSTC_BOOTSTRAP, so no nightly is needed.
export RUSTC_BOOTSTRAP=1

# Its own target dir: the instrumented build shares nothing with the normal one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/fuzz}"
summary=()
for t in rules_loader event_parser plugin_effects; do
  mkdir -p "fuzz/corpus/$t"
  log="$(mktemp)"
  cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -max_len=16384 -print_final_stats=1 2>&1 | tee "$log" | grep -E 'DONE|ERROR|panicked|SUMMARY' || true
  status="${PIPESTATUS[0]}"
  runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)"
  rm -f "$log"
  if [ "$status" != 0 ]; then
    echo "fuzz: $t FAILED (exit $status); the input is in fuzz/artifacts/$t"
    exit 1
  fi
  summary+=("$t: $runs inputs, no crash")
done
echo "fuzz (${secs}s per target): $(IFS=';'; echo "${summary[*]}" | sed 's/;/; /g'); corpus: $(ls fuzz/corpus/rules_loader | wc -l) + $(ls fuzz/corpus/event_parser | wc -l) inputs"
