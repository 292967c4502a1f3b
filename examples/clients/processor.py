"""The processor face: a script runs with a context, and each of its engine
commands is a round trip to this client, which plays the game engine."""

import json

from websockets.sync.client import connect

from common import HEADERS, WS_URL

SCRIPT = """import sandlot
moved = sandlot.engine('move', {'x': 1, 'y': 2})
print(sandlot.context['player'], 'is at', moved['at'])
"""

with connect(WS_URL + "/processor", additional_headers=HEADERS) as ws:
    assert json.loads(ws.recv())["type"] == "ready"
    ws.send(json.dumps({"type": "context", "language": "python", "context": {"player": "ada"}}))
    assert json.loads(ws.recv())["type"] == "ready"
    ws.send(SCRIPT)  # the code itself, as one text frame
    while True:
        message = json.loads(ws.recv())
        if message["type"] == "command":
            args = message["args"]
            ws.send(json.dumps({"type": "command_result", "id": message["id"], "ok": True,
                                "result": {"at": [args["x"], args["y"]]}}))
        elif message["type"] in ("stdout", "stderr"):
            print(message["message"], end="")
        elif message["type"] == "end":
            print("end:", message["exitCode"])
            break
        elif message["type"] == "error":
            raise SystemExit(message["message"])
