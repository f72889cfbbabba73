#!/usr/bin/env bash
# Scale on PostgreSQL: 1M leads, 10M events (docs/benchmarks.md, "Scale").
# Needs a PostgreSQL server: NURTURE_TEST_DATABASE_URL (default: the local one,
# postgres://postgres@127.0.0.1:5432/test; a `nurture_scale` database is made on
# it and left for inspection). Sizes: NURTURE_SCALE_LEADS, NURTURE_SCALE_EVENTS,
# NURTURE_SCALE_SPAN (30d), NURTURE_SCALE_PROCESS_SECS (600). About 6 GB of disk.
# Prints one summary line; progress and the other figures go to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export NURTURE_TEST_DATABASE_URL="${NURTURE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -d "$NURTURE_TEST_DATABASE_URL" -q; then
  echo "no PostgreSQL answers at $NURTURE_TEST_DATABASE_URL" >&2
  exit 1
fi
cargo bench --quiet --bench scale | tee /dev/stderr | grep '^scale summary' | tail -n1
