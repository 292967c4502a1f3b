#!/usr/bin/env bash
# The project's one entry point on a fresh machine. Everything it needs
# (Debian packages, pinned PyPI tools, crates) it installs itself, idempotently.
#
#   ./dev.sh serve [ARGS...]   build everything, then start the server
#   ./dev.sh test              build everything, then run the whole test suite
#   ./dev.sh build             build the guests and the release binary
#   ./dev.sh run FILE...       build, then `sandlot run FILE...`
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
# Compiled guests live here, shared by the binary and the tests of this checkout.
export SANDLOT_CACHE_DIR="${SANDLOT_CACHE_DIR:-$ROOT/target/sandlot-cache}"

step() { printf '\n==> %s\n' "$*" >&2; }

# `cargo test --no-run` builds the binary and the tests in one go (one
# feature resolution, so nothing is compiled twice).
build() {
    command -v cargo >/dev/null || { echo "cargo is missing: install Rust 1.95 (rustup)" >&2; exit 1; }
    step "guests"
    guest-runtimes/build.sh
    step "sandlot (release build; the first one takes 5-20 minutes)"
    cargo test --release --locked --no-run
    step "compiling guests to native code (cached in $SANDLOT_CACHE_DIR)"
    target/release/sandlot prepare
}

case "${1:-}" in
    build) build ;;
    serve) shift; build; step "serving"; exec target/release/sandlot serve "$@" ;;
    run) shift; build >&2; exec target/release/sandlot run "$@" ;;
    test)
        step "formatting"
        cargo fmt --check
        build
        step "tests"
        cargo test --release --locked -- --test-threads="${SANDLOT_TEST_THREADS:-4}"
        ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
