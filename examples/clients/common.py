"""What every Python example shares: where the server is, and its token."""

import json
import os
import urllib.request

URL = os.environ.get("SANDLOT_URL", "http://127.0.0.1:8765").rstrip("/")
TOKEN = os.environ.get("SANDLOT_TOKEN")
HEADERS = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
WS_URL = "ws" + URL[len("http"):]


def rest(method, path, body=None):
    """One REST call; its JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **HEADERS})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def varint(n):
    """A protobuf varint: the few messages the examples send are encoded by hand."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)
