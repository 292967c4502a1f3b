#!/usr/bin/env bash
# The project's one entry point on a fresh machine. Everything it needs
# (Debian packages, pinned PyPI tools, crates) it installs itself, idempotently.
#
#   ./dev.sh serve [ARGS...]   build everything, then start the server
#   ./dev.sh test              check, build everything, then run the whole test suite
#   ./dev.sh build             build the guests and the release binary
#   ./dev.sh run FILE...       build, then `sandlot run FILE...`
#   ./dev.sh fuzz TARGET [S]   fuzz one parser coverage-guided for S seconds (default 600)
#   ./dev.sh soak [ARGS...]    build, then `sandlot soak` (memory and fds under load)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
# Compiled guests live here, shared by the binary and the tests of this checkout.
export SANDLOT_CACHE_DIR="${SANDLOT_CACHE_DIR:-$ROOT/target/sandlot-cache}"
CARGO_BOLERO_VERSION=0.13.4

step() { printf '\n==> %s\n' "$*" >&2; }

need_cargo() {
    command -v cargo >/dev/null || { echo "cargo is missing: install Rust 1.95 (rustup)" >&2; exit 1; }
}

# `cargo test --no-run` builds the binary and the tests in one go (one
# feature resolution, so nothing is compiled twice).
build() {
    need_cargo
    step "guests"
    guest-runtimes/build.sh
    step "sandlot (release build; the first one takes 5-20 minutes)"
    cargo test --release --locked --no-run
    step "compiling guests to native code (cached in $SANDLOT_CACHE_DIR)"
    target/release/sandlot prepare
}

# The quick checks come before the slow builds: formatting, the shell
# scripts, clippy (which needs no guest: build.rs embeds whichever are built).
check() {
    need_cargo
    step "formatting"
    cargo fmt --check
    step "tools"
    guest-runtimes/tools.sh
    tests/clients/install.sh
    step "shell scripts"
    shellcheck -x dev.sh .ci/run guest-runtimes/*.sh guest-runtimes/*/build.sh tests/clients/*.sh
    step "clippy"
    cargo clippy --release --locked --all-targets -- -D warnings
    # The library as an embedder builds it: without the binary's crates.
    cargo clippy --release --locked --no-default-features --lib --examples -- -D warnings
}

fuzz() {
    local target="${1:?usage: ./dev.sh fuzz TARGET [SECONDS] (targets: see tests/fuzz.rs)}" seconds="${2:-600}"
    local bin="$ROOT/.tools/bolero/bin/cargo-bolero"
    if [ ! -x "$bin" ] || ! "$bin" --version | grep -q "$CARGO_BOLERO_VERSION"; then
        step "installing cargo-bolero $CARGO_BOLERO_VERSION (once)"
        cargo install -q --locked cargo-bolero --version "$CARGO_BOLERO_VERSION" --no-default-features \
            --root "$ROOT/.tools/bolero"
    fi
    guest-runtimes/build.sh
    # The kept corpus seeds a working one; what libFuzzer finds stays out of the repository.
    local corpus="target/fuzz/corpus/$target" crashes="target/fuzz/crashes/$target"
    mkdir -p "$corpus" "$crashes"
    cp -n "tests/__fuzz__/$target/corpus/"* "$corpus/"
    step "fuzzing $target for $seconds s (libFuzzer; corpus in $corpus, crashes in $crashes)"
    PATH="$ROOT/.tools/bolero/bin:$PATH" cargo bolero test "targets::$target" --manifest-path fuzz/Cargo.toml \
        --engine libfuzzer --sanitizer NONE -T "${seconds}s" --corpus-dir "$corpus" --crashes-dir "$crashes"
}

case "${1:-}" in
    build) build ;;
    serve) shift; build; step "serving"; exec target/release/sandlot serve "$@" ;;
    run) shift; build >&2; exec target/release/sandlot run "$@" ;;
    soak) shift; build >&2; exec target/release/sandlot soak "$@" ;;
    fuzz) shift; fuzz "$@" ;;
    test)
        check
        build
        step "tests (each parser is fuzzed for ${SANDLOT_FUZZ_SECONDS:-2} s)"
        cargo test --release --locked -- --test-threads="${SANDLOT_TEST_THREADS:-4}"
        ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
