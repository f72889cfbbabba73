#!/usr/bin/env bash
# Builds the example plugins (plugins/) and the hostile test plugins
# (tests/plugins/) for wasm32-wasip2 and copies the components next to their
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
export RUSTFLAGS="--remap-path-prefix=$root=/nurture --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$rustup_home=/rustup"
export CARGO_INCREMENTAL=0
unset CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS

failed=0
# build WORKSPACE DEST: builds every cdylib of WORKSPACE, puts NAME.wasm in DEST.
build() {
  local ws="$1" dest="$2"
  (cd "$ws" && cargo build --quiet --locked --release --target "$target")
  local out="$CARGO_TARGET_DIR/$target/release"
  local names
  names=$(cd "$ws" && cargo metadata --locked --no-deps --format-version 1 |
    python3 -c 'import json,sys
for p in json.load(sys.stdin)["packages"]:
    if any("cdylib" in t["crate_types"] for t in p["targets"]):
        print(p["name"].replace("-", "_"))')
  for n in $names; do
    if $check; then
      if ! cmp -s "$out/$n.wasm" "$dest/$n.wasm"; then
        echo "plugins/build.sh: $dest/$n.wasm differs from its sources; run plugins/build.sh and commit" >&2
        failed=1
      fi
    else
      cp "$out/$n.wasm" "$dest/$n.wasm"
    fi
  done
}

build "$root/plugins" "$root/plugins"
build "$root/tests/plugins" "$root/tests/plugins"
if [[ $failed != 0 ]]; then
  exit 1
fi
$check && echo "plugins: committed .wasm files match their sources"
exit 0
