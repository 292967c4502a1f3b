"""The datasets face, as Hanami's SDK uses it: create a CSV dataset, upload
it in protobuf chunks over a WebSocket (one reply each), finalise it, then
read it from a run at /data."""

import json

from websockets.sync.client import connect

from common import HEADERS, WS_URL, rest, varint

CSV = b"x,y\n" + b"".join(b"%d,%d\n" % (i, 2 * i) for i in range(1000))
CHUNK = 4096


def file_upload_message(position, data):
    """FileUpload_Message { uint64 position = 1; bytes data = 2; }"""
    return b"\x08" + varint(position) + b"\x12" + varint(len(data)) + data


created = rest("POST", "/v1/csv/dataset", {"name": "points", "input_data_size": len(CSV)})
with connect(WS_URL + "/", additional_headers=HEADERS) as ws:
    ws.send(json.dumps({"uuid": created["uuid_input_file"], "target": "file_upload"}))
    assert json.loads(ws.recv())["success"], "the upload was refused"
    for position in range(0, len(CSV), CHUNK):
        ws.send(file_upload_message(position, CSV[position:position + CHUNK]))
        reply = ws.recv()  # FileUploadResponse_Message { bool success = 1; string errorMessage = 2; }
        assert reply[:2] == b"\x08\x01", f"chunk at {position} refused: {reply!r}"
print("progress:", rest("GET", f"/v1/dataset/progress?uuid={created['uuid']}")["complete"])
dataset = rest("PUT", "/v1/csv/dataset", {"uuid": created["uuid"], "uuid_input_file": created["uuid_input_file"]})
path = dataset["paths"][0]
code = f"import csv\nrows = list(csv.DictReader(open({path!r})))\nprint(len(rows), 'rows, y sums to', sum(int(r['y']) for r in rows))"
print(rest("POST", "/v1/exec", {"language": "python", "code": code})["stdout"], end="")
rest("DELETE", f"/v1/dataset?uuid={created['uuid']}")
