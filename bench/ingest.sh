#!/usr/bin/env bash
# Batch ingest on SQLite against a plain sqlx insert loop of the same rows
# (docs/benchmarks.md, "Daemon"). Runs `cargo bench --bench daemon sqlite` and
# prints one summary line; the bench's other lines go to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo bench --quiet --bench daemon -- sqlite | tee /dev/stderr | grep '^ingest summary' | tail -n1
