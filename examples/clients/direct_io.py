"""Direct IO, as Hanami's SDK does it: a session whose run saved a model is
put in DIRECT mode, then asked over a WebSocket of protobuf frames
(ClusterIO_Message), one reply per frame."""

import json
import struct

from websockets.sync.client import connect

from common import HEADERS, WS_URL, rest, varint

CODE = """import sandlot
class Scale:
    def __init__(self):
        self.factor = 2
    def predict(self, xs):
        return [self.factor * x for x in xs]
    def train(self, xs):
        self.factor = xs[0]
sandlot.save_model('scale', Scale())
"""


def cluster_io(brick, values, train=False):
    """ClusterIO_Message { string brickName = 1; bool isLast = 2; ClusterProcessType processType = 3;
    uint64 numberOfValues = 4; repeated float values = 5 [packed]; }, the whole input in one frame."""
    name, packed = brick.encode(), struct.pack(f"<{len(values)}f", *values)
    return (b"\x0a" + varint(len(name)) + name + b"\x10\x01" + b"\x18" + varint(1 if train else 0)
            + b"\x20" + varint(len(values)) + b"\x2a" + varint(len(packed)) + packed)


def values_of(message):
    """The packed floats (field 5) of a ClusterIO_Message reply."""
    at, values = 0, []
    while at < len(message):
        key, at = message[at], at + 1
        field, wire = key >> 3, key & 7
        if wire == 0:
            while message[at] & 0x80:
                at += 1
            at += 1
        elif wire == 2:
            length, shift = 0, 0
            while True:
                byte, at = message[at], at + 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if field == 5:
                values = list(struct.unpack(f"<{length // 4}f", message[at:at + length]))
            at += length
    return values


with connect(WS_URL + "/", additional_headers=HEADERS) as ws:
    ws.send(json.dumps({"action": "run", "python": {"files": [{"filename": "main.py", "content": CODE}]}}))
    session = json.loads(ws.recv())["sessionId"]
    while json.loads(ws.recv())["action"] != "finished":
        pass

rest("PUT", "/v1/cluster/set_mode", {"uuid": session, "new_state": "DIRECT"})
with connect(WS_URL + "/", additional_headers=HEADERS) as ws:
    ws.send(json.dumps({"uuid": session, "target": "cluster"}))
    assert json.loads(ws.recv())["success"]
    ws.send(cluster_io("scale", [1, 2, 3]))
    print("prediction:", values_of(ws.recv()))
    ws.send(cluster_io("scale", [10], train=True))
    ws.recv()  # an empty ClusterIO_Message: trained
    ws.send(cluster_io("scale", [1, 2, 3]))
    print("after training:", values_of(ws.recv()))
