# shellcheck shell=bash
# Shared by zen.sh and json-rules-engine.sh (sourced, not run).
# Settings, from the environment: LEADS, EVENTS, SEED (the workload),
# REPS (timed runs per engine), CARGO_TARGET_DIR.

: "${here:?set by the script that sources this}"
root=$(cd "$here/../.." && pwd)
LEADS=${LEADS:-2000}
EVENTS=${EVENTS:-100000}
SEED=${SEED:-42}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/peers}
bin=$CARGO_TARGET_DIR/release/peer-bench

die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "needs $1 ($2)"
}

# Builds bench/peers/rust (Nurture as a library, and zen-engine) in the
# release profile; both scripts use the same binary.
build_runner() {
    need cargo "Rust: https://rustup.rs"
    echo "building bench/peers/rust (release) into $CARGO_TARGET_DIR ..." >&2
    cargo build --release --locked --quiet --manifest-path "$here/rust/Cargo.toml" >&2
}

# The workload, into a temporary directory (removed on exit): the events of
# `nurture gen --leads $LEADS --events $EVENTS --seed $SEED` without its sales
# feedback (2 %): in Nurture a `rejected` or `lost` answer recycles the lead
# and resets its score, state that the stateless peers do not have.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
events=$tmp/events.jsonl

gen_events() {
    "$bin" gen --leads "$LEADS" --events "$EVENTS" --seed "$SEED" >"$tmp/all.jsonl"
    grep -v '"type":"sales_feedback"' "$tmp/all.jsonl" >"$events"
    # shellcheck disable=SC2034 # read by json-rules-engine.sh
    n_events=$(wc -l <"$events")
}
