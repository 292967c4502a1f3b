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
