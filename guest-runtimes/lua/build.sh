#!/usr/bin/env bash
# Builds the Lua guest component: Lua 5.4 (C sources from the crates.io crate
# lua-src, pinned in sources/Cargo.toml) with main.c, prelude.lua and the
# shared wit-bindgen C bindings (../c-bindings), compiled by the clang of the
# PyPI package ziglang (it lowers setjmp/longjmp to wasm exceptions), then
# made a component with the WASI preview1 reactor adapter.
# Usage: build.sh OUTPUT.wasm   (tools come from ../tools.sh)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUTPUT="$1"
# shellcheck source=SCRIPTDIR/../tools.sh
source "$HERE/../tools.sh"
install_zig
refresh_c_bindings

LUA="$(crate_dir "$HERE/sources/Cargo.toml" lua-src)/lua-5.4.9"
ADAPTER="$(crate_dir "$HERE/sources/Cargo.toml" wasi-preview1-component-adapter-provider)/artefacts/wasi_snapshot_preview1.reactor.wasm"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
embed_c_array "$HERE/prelude.lua" "$WORK/prelude.h" prelude_lua

# LUA_USE_IOS: os.execute has no shell to run (`system` is not in WASI);
# _WASI_EMULATED_SIGNAL: only for the sig_atomic_t type Lua's state uses.
CFLAGS=(-target wasm32-wasi -O2 -mexception-handling -mllvm -wasm-enable-sjlj -mllvm -wasm-use-legacy-eh=false
        -D_WASI_EMULATED_SIGNAL -DLUA_USE_IOS
        -I"$LUA" -I"$WORK" -I"$C_BINDINGS")
objects=() pids=()
for src in "$LUA"/*.c; do
    name="$(basename "$src" .c)"
    # lundump.c (binary chunks) is replaced by text_only.c.
    case "$name" in lua | luac | onelua | lundump) continue ;; esac
    "${ZIG[@]}" cc "${CFLAGS[@]}" -Wno-everything -c "$src" -o "$WORK/$name.o" & pids+=($!)
    objects+=("$WORK/$name.o")
done
"${ZIG[@]}" cc "${CFLAGS[@]}" -Wall -Werror -c "$HERE/text_only.c" -o "$WORK/text_only.o" & pids+=($!)
objects+=("$WORK/text_only.o")
"${ZIG[@]}" cc "${CFLAGS[@]}" -Wall -Werror -Wno-unused-parameter -c "$HERE/main.c" -o "$WORK/main.o" & pids+=($!)
"${ZIG[@]}" cc "${CFLAGS[@]}" -c "$HERE/setjmp.c" -o "$WORK/setjmp.o" & pids+=($!)
"${ZIG[@]}" cc "${CFLAGS[@]}" -Wno-everything -c "$C_BINDINGS/sandbox.c" -o "$WORK/sandbox.o" & pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" -eq 0 ] || { log "the lua guest did not compile"; exit 1; }
# A 2 MiB shadow stack placed first, so an overflow traps instead of
# overwriting data; Lua's own limit on C calls (200 levels) stops well before.
"${ZIG[@]}" cc "${CFLAGS[@]}" -mexec-model=reactor -o "$WORK/core.wasm" "${objects[@]}" "$WORK/main.o" \
    "$WORK/setjmp.o" "$WORK/sandbox.o" "$C_BINDINGS/sandbox_component_type.o" \
    -Wl,-z,stack-size=2097152
wasm-tools component new "$WORK/core.wasm" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$WORK/lua.wasm"
wasm-tools validate --features all "$WORK/lua.wasm"
mv "$WORK/lua.wasm" "$OUTPUT"
log "lua guest: $(du -h "$OUTPUT" | cut -f1)"
