#!/usr/bin/env bash
# Fuzzes where untrusted text enters: the rules loader and the event parsers
# (fuzz/fuzz_targets). Usage: fuzz/run.sh [SECONDS per target, default 600]
#
# New inputs that reach new code are added to fuzz/corpus/<target> (kept in
# git); fuzz/seeds/<target> holds the hand-written starting points and every
# input that once crashed a target (found-<sha1 prefix>), so each run tries
# them again. `fuzz/run.sh --build` only builds the targets (CI builds them
# at low priority while its tests run). A crash (a panic, a timeout, running out of memory) fails the
# run with exit 1: the input is copied to fuzz/seeds/<target>/found-<...> (commit
# it with the fix) and the script says how to reproduce it, which is
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> fuzz/seeds/<target>/found-<...>
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"

command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz@0.13.2

# cargo-fuzz passes nightly-only flags (-Z sanitizer, coverage passes); the
# stable toolchain accepts them with RUSTC_BOOTSTRAP, so no nightly is needed.
export RUSTC_BOOTSTRAP=1

# How the targets are built. cargo-fuzz's default (release, ASan, one
# codegen unit, opt-level 3) makes the instrumented build most of CI's
# time; 16 units and opt-level 1 build faster and fuzz a little slower,
# which a short run does not notice. Long runs (docs/benchmarks.md) set
# FUZZ_BUILD="--release --codegen-units 1" FUZZ_OPT_LEVEL=3. (An
# unoptimised build was tried: it overflows the stack on deep inputs the
# optimised builds handle.) The targets depend on nurture-core alone, so
# neither sqlx, tokio nor wasmtime is instrumented.
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${FUZZ_OPT_LEVEL:-1}"
read -r -a build <<< "${FUZZ_BUILD:---release --codegen-units 16}"

# Its own target dir: the instrumented build shares nothing with the normal one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/fuzz}"

# The fuzz targets, one per line of fuzz/Cargo.toml's [[bin]] sections.
targets=(rules_loader event_parser plugin_effects)

if [ "$secs" = --build ]; then
  exec cargo fuzz build --fuzz-dir fuzz "${build[@]}"
fi

summary=()
corpus=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  log="$(mktemp)"
  # The full output goes to the log; the lines that matter are shown as
  # they come. The exit code is cargo-fuzz's: grep finding nothing, or
  # finding a crash's lines, must not decide it.
  set +e
  cargo fuzz run --fuzz-dir fuzz "${build[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -max_len=16384 -print_final_stats=1 2>&1 |
    tee "$log" | grep --line-buffered -E 'DONE|ERROR|panicked|SUMMARY'
  codes=("${PIPESTATUS[@]}")
  set -e
  status="${codes[0]}"
  runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1 || true)"
  if [ "$status" != 0 ]; then
    # libFuzzer names the input it stopped on: "Test unit written to PATH".
    input="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    echo "fuzz: $t FAILED (exit $status)"
    if [ -n "$input" ] && [ -f "$input" ]; then
      kept="fuzz/seeds/$t/found-$(sha1sum "$input" | cut -c1-12)"
      cp "$input" "$kept"
      echo "fuzz: the input is kept as $kept (commit it with the fix); reproduce with:"
      echo "  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $t $kept"
    else
      echo "fuzz: libFuzzer named no input; the last lines of its output:"
      tail -n 40 "$log"
    fi
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  summary+=("$t: ${runs:-0} inputs, no crash")
  corpus+=("$t $(find "fuzz/corpus/$t" -type f | wc -l)")
done
join() { local sep="$1" out="$2"; shift 2; for x in "$@"; do out+="$sep$x"; done; echo "$out"; }
echo "fuzz (${secs}s per target): $(join '; ' "${summary[@]}"); corpus: $(join ', ' "${corpus[@]}") inputs"
