#!/usr/bin/env bash
# Sending against postfix's smtp-source into the same smtp-sink (docs/benchmarks.md,
# "Email"). Installs postfix (Debian package) when smtp-sink is missing, runs
# `cargo bench --bench email` (COUNT messages, default 20000) and prints one
# summary line; the bench's other lines go to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin"
if ! command -v smtp-sink >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing postfix (for smtp-sink and smtp-source) ..." >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >&2 ||
    { $sudo apt-get update -q >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >&2; }
fi
cargo bench --quiet --bench email -- "${COUNT:-20000}" | tee /dev/stderr | grep '^email summary' | tail -n1
