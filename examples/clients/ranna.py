"""ranna's face: one run over the WebSocket (ops and events), one over REST."""

import json

from websockets.sync.client import connect

from common import HEADERS, WS_URL, rest

with connect(WS_URL + "/v1/ws", additional_headers=HEADERS) as ws:
    # op 1 EXEC; events: 2 SPAWN, 3 LOG (output as written), 4 STOP, 1 ERROR.
    ws.send(json.dumps({"op": 1, "nonce": 1, "args": {"language": "python", "code": "print(6 * 7)"}}))
    while True:
        event = json.loads(ws.recv())
        if event["code"] == 3:
            print(event["data"].get("stdout", ""), end="")
        elif event["code"] == 4:
            print("websocket run:", event["data"]["reason"], event["data"]["exitcode"])
            break
        elif event["code"] == 1:
            raise SystemExit(event["data"])

result = rest("POST", "/v1/exec", {"language": "javascript", "code": "console.log([1, 2, 3].map((x) => x * 2).join(' '))"})
print(result["stdout"], end="")
print("rest run:", result["reason"], result["exitcode"])
