#!/usr/bin/env bash
# Installs, idempotently, the real clients the tests drive the server with,
# pinned, in a venv of their own (.tools/test-clients: they bring their own
# dependencies): the official MCP client, Prometheus's Python client (its text
# parser reads /metrics), an OpenAPI validator (it reads /v1/openapi.json),
# websockets (for the Python client examples, examples/clients/) and
# Playwright, which drives Debian's Chromium through the playground (browsers
# cannot be downloaded here: Playwright's own is never installed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.tools/test-clients"
PINNED=(mcp==2.3.0 prometheus-client==0.26.0 openapi-spec-validator==0.9.0 playwright==1.65.2 websockets==17.4)

have="$("$VENV/bin/python" - "${PINNED[@]}" 2>/dev/null <<'PY' || true
import importlib.metadata as m, sys
print(all(m.version(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:]))
PY
)"
if [ "$have" != "True" ]; then
    printf '[test clients] installing %s\n' "${PINNED[*]}" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PINNED[@]}"
fi

# Debian's chromium (for the playground test), nats-server (for the
# cluster tests, which start their own with JetStream on) and openssl (the
# cluster tests make a certificate authority for NATS over TLS).
missing=()
for package in chromium nats-server openssl; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    printf '[test clients] installing Debian %s\n' "${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
