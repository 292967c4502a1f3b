#!/usr/bin/env bash
# Builds the JavaScript guest component: QuickJS-NG (C sources from the
# crates.io crate rquickjs-sys, pinned in sources/Cargo.toml) with main.c and
# the committed wit-bindgen C bindings (../c-bindings), compiled by Debian's clang against
# wasi-libc, then made a component with the WASI preview1 reactor adapter.
# Usage: build.sh OUTPUT.wasm   (tools come from ../tools.sh)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUTPUT="$1"
# shellcheck source=SCRIPTDIR/../tools.sh
source "$HERE/../tools.sh"

refresh_c_bindings

QUICKJS="$(crate_dir "$HERE/sources/Cargo.toml" rquickjs-sys)/quickjs"
ADAPTER="$(crate_dir "$HERE/sources/Cargo.toml" wasi-preview1-component-adapter-provider)/artefacts/wasi_snapshot_preview1.reactor.wasm"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp "$QUICKJS"/*.c "$QUICKJS"/*.h "$WORK/"
# QuickJS-NG turns its stack check off on WASI, so deep recursion would trap
# and kill the instance. Turn it back on: the shadow stack is ours to measure.
python3 - "$WORK/quickjs.c" <<'PY'
import sys
path = sys.argv[1]
src = open(path).read()
old = "#if defined(__wasi__)\n    rt->stack_limit = 0; /* no limit */\n#else\n"
assert old in src, "quickjs.c changed: review the stack-check patch in build.sh"
src = src.replace(old, "#if 1\n", 1)
old = "#ifdef __wasi__\n    rt->stack_size = 0;\n#endif\n"
assert old in src, "quickjs.c changed: review the stack-check patch in build.sh"
src = src.replace(old, "", 1)
# On wasm, __builtin_frame_address does not follow the shadow stack; the
# address of a local does.
old = "#if defined(__clang__) || defined(__GNUC__)\n    return (uintptr_t)__builtin_frame_address(0);"
assert old in src, "quickjs.c changed: review the stack-pointer patch in build.sh"
src = src.replace(old, "#if (defined(__clang__) || defined(__GNUC__)) && !defined(__wasi__)\n    return (uintptr_t)__builtin_frame_address(0);", 1)
# Math.random's state is seeded from the clock when a context is made; a
# context baked into the module (src/guest/prebake.rs) would give every
# session the same numbers, so main.c seeds each instance afresh.
src += "\nvoid sandlot_seed_random(JSContext *ctx, uint64_t seed) { ctx->random_state = seed ? seed : 1; }\n"
open(path, "w").write(src)
PY
embed_c_array "$HERE/prelude.js" "$WORK/prelude.h" prelude_js

CFLAGS=(--target=wasm32-wasi -O2 -D_GNU_SOURCE -DNDEBUG
        -I"$WORK" -I"$C_BINDINGS")
objects=() pids=()
for src in quickjs libregexp libunicode dtoa; do
    clang "${CFLAGS[@]}" -Wno-everything -c "$WORK/$src.c" -o "$WORK/$src.o" & pids+=($!)
    objects+=("$WORK/$src.o")
done
clang "${CFLAGS[@]}" -Wall -Werror -Wno-unused-parameter -c "$HERE/main.c" -o "$WORK/main.o" & pids+=($!)
clang "${CFLAGS[@]}" -Wno-everything -c "$C_BINDINGS/sandbox.c" -o "$WORK/sandbox.o" & pids+=($!)
for pid in "${pids[@]}"; do wait "$pid"; done
# A 2 MiB shadow stack placed first, so an overflow traps instead of
# overwriting data; QuickJS's own check (main.c) stops recursion well before.
clang "${CFLAGS[@]}" -mexec-model=reactor -o "$WORK/core.wasm" "${objects[@]}" "$WORK/main.o" "$WORK/sandbox.o" \
    "$C_BINDINGS/sandbox_component_type.o" \
    -Wl,--stack-first -Wl,-z,stack-size=2097152 -lm
wasm-tools component new "$WORK/core.wasm" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$WORK/javascript.wasm"
wasm-tools validate "$WORK/javascript.wasm"
mv "$WORK/javascript.wasm" "$OUTPUT"
log "javascript guest: $(du -h "$OUTPUT" | cut -f1)"
