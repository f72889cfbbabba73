#!/usr/bin/env bash
# Builds the example plugins (plugins/) and the hostile test plugins
# (plugins/tests/) for wasm32-wasip2 and copies the components next to their
# sources, where they are committed:
#
#   plugins/company_size.wasm, plugins/free_mail.wasm
#   tests/plugins/<name>.wasm
#
#   plugins/build.sh           build and copy
#   plugins/build.sh --check   build and fail if a committed .wasm differs (CI)
#
# Reproducible: the toolchain is pinned (rust-toolchain.toml), dependencies are
# --locked, the profile is fixed (Cargo.toml: lto, one codegen unit, strip),
# and paths are remapped so where the repository lives does not matter.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
check=false
[[ "${1:-}" == "--check" ]] && check=true

target=wasm32-wasip2
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  # rust-toolchain.toml names the target; this installs it if it is missing.
  (cd "$root/plugins" && rustup target add "$target")
fi

cargo_home="${CARGO_HOME:-$HOME/.cargo}"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
export CARGO_TARGET_DIR="$root/target/plugins"
# Workspace sources reach rustc as relative paths; only the registry and
# toolchain paths need remapping (and no repository path may be in the
# flags: cargo would hash it into every crate, and the output would depend
# on it). They go in with --config, which cargo adds to the flags in
# plugins/.cargo/config.toml (the stack size); RUSTFLAGS would replace them.
remap="target.$target.rustflags=[\"--remap-path-prefix=$cargo_home=/cargo\", \"--remap-path-prefix=$rustup_home=/rustup\"]"
export CARGO_INCREMENTAL=0
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS

failed=0
# One workspace (plugins/Cargo.toml) holds the SDK, the examples and the test
# plugins, all below it: rustc sees relative paths only.
(cd "$root/plugins" && cargo build --quiet --locked --release --target "$target" --config "$remap")
out="$CARGO_TARGET_DIR/$target/release"
# NAME DIR for every cdylib: the component goes to DIR/NAME.wasm, where
# DIR is plugins/ for the examples and tests/plugins/ for the test plugins
# (sources in plugins/tests/).
list=$(cd "$root/plugins" && cargo metadata --locked --no-deps --format-version 1 |
  python3 -c 'import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if any("cdylib" in t["crate_types"] for t in p["targets"]):
        d = os.path.dirname(os.path.dirname(p["manifest_path"]))
        print(p["name"].replace("-", "_"), d.replace("/plugins/tests", "/tests/plugins"))')
while read -r n dest; do
  if $check; then
    if ! cmp -s "$out/$n.wasm" "$dest/$n.wasm"; then
      echo "plugins/build.sh: $dest/$n.wasm differs from its sources; run plugins/build.sh and commit" >&2
      failed=1
    fi
  else
    cp "$out/$n.wasm" "$dest/$n.wasm"
  fi
done <<< "$list"

if [[ $failed != 0 ]]; then
  exit 1
fi
$check && echo "plugins: committed .wasm files match their sources"
exit 0
